import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bbjax.privacy import add_gaussian_noise, analytic_gaussian_stddev, central_noise_stddev, classic_gaussian_stddev, gaussian_delta, noised_mean

from bbjax.errors import PrivacyError

from ._stats import assert_normal


def test_central_noise_stddev_is_z_c_over_n():
    assert central_noise_stddev(1.1, 0.5, 20) == pytest.approx(1.1 * 0.5 / 20)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_add_gaussian_noise_keeps_dtypes_and_scale(dtype):
    tree = {"a": jnp.zeros((100, 100), dtype), "b": jnp.zeros((50,), dtype)}
    noised = add_gaussian_noise(jax.random.key(0), tree, 0.25)
    assert noised["a"].dtype == dtype and noised["b"].shape == (50,)
    if dtype == jnp.float32:
        assert_normal(noised["a"], 0.25)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 2), (9, 1)])
def test_noised_mean_without_noise_matches_numpy(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    mask = np.arange(shape[0]) % 3 != 1
    got = noised_mean(jax.random.key(0), {"x": x}, 0.0, 7, jnp.asarray(mask))["x"]
    expected = np.asarray(x, np.float64)[mask].sum(axis=0) / 7
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def np_gaussian_delta(sigma, eps, sens):
    """Balle & Wang (2018) Theorem 8, with scipy.stats in float64."""
    a, b = sens / (2 * sigma), eps * sigma / sens
    return stats.norm.cdf(a - b) - math.exp(eps) * stats.norm.cdf(-a - b)


@pytest.mark.parametrize(
    "eps,delta,sens", [(0.5, 1e-5, 1.0), (1.0, 1e-6, 2.0), (4.0, 1e-5, 0.3), (0.1, 1e-3, 1.0)]
)
def test_analytic_calibration_is_exact_and_tight(eps, delta, sens):
    sigma = analytic_gaussian_stddev(eps, delta, sens)
    assert gaussian_delta(sigma, eps, sens) == pytest.approx(
        np_gaussian_delta(sigma, eps, sens), rel=1e-9
    )
    assert np_gaussian_delta(sigma, eps, sens) <= delta * (1 + 1e-9)
    assert np_gaussian_delta(sigma * (1 - 1e-6), eps, sens) > delta
    if eps < 1:
        assert sigma < classic_gaussian_stddev(eps, delta, sens)


def test_analytic_calibration_agrees_with_dp_accounting_pld():
    dp_accounting = pytest.importorskip("dp_accounting")
    sigma = analytic_gaussian_stddev(1.0, 1e-5, 1.0)
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.GaussianDpEvent(sigma))
    assert accountant.get_delta(1.0) == pytest.approx(1e-5, rel=1e-6)


def test_classic_calibration_formula():
    assert classic_gaussian_stddev(0.5, 1e-5, 2.0) == pytest.approx(
        2.0 * math.sqrt(2 * math.log(1.25e5)) / 0.5
    )


@pytest.mark.parametrize(
    "fn,args,match",
    [
        (classic_gaussian_stddev, (1.0, 1e-5, 1.0), "epsilon must be < 1"),
        (classic_gaussian_stddev, (0.0, 1e-5, 1.0), "epsilon"),
        (analytic_gaussian_stddev, (1.0, 0.0, 1.0), "delta"),
        (analytic_gaussian_stddev, (1.0, 1.0, 1.0), "delta"),
        (analytic_gaussian_stddev, (1.0, 1e-5, -1.0), "sensitivity"),
    ],
)
def test_bad_calibration_parameters_raise(fn, args, match):
    with pytest.raises(PrivacyError, match=match):
        fn(*args)
