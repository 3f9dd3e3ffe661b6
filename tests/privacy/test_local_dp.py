import math

import jax
import numpy as np
import pytest

from bbjax.privacy import analytic_gaussian_stddev, local_gaussian

from bbjax.errors import PrivacyError

from ._stats import assert_normal


def test_classic_noise_is_flowers_local_dp_formula():
    mechanism = local_gaussian(1.0, 0.8, 1e-5, sensitivity=0.7, calibration="classic")
    assert mechanism.noise_stddev == pytest.approx(0.7 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.8)


def test_default_sensitivity_is_twice_the_clipping_norm():
    assert local_gaussian(0.5, 2.0, 1e-5).noise_stddev == analytic_gaussian_stddev(2.0, 1e-5, 1.0)


@pytest.mark.parametrize("shape", [(40, 50), (2000,)])
def test_privatize_clips_then_adds_noise_of_the_documented_scale(shape):
    update = (3.0 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    mechanism = local_gaussian(1.5, 3.0, 1e-5)
    out = jax.jit(mechanism.privatize)(jax.random.key(1), {"u": update})["u"]
    clipped = update.astype(np.float64) * 1.5 / np.linalg.norm(update.astype(np.float64))
    assert_normal(np.asarray(out, np.float64) - clipped, mechanism.noise_stddev)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((0.0, 1.0, 1e-5), {}, "clipping_norm"),
        ((1.0, -1.0, 1e-5), {}, "epsilon"),
        ((1.0, 1.0, 2.0), {}, "delta"),
        ((1.0, 1.0, 1e-5), {"calibration": "classic"}, "epsilon must be < 1"),
        ((1.0, 1.0, 1e-5), {"calibration": "laplace"}, "calibration"),
        ((1.0, 1.0, 1e-5), {"sensitivity": -2.0}, "sensitivity"),
    ],
)
def test_bad_parameters_raise(args, kwargs, match):
    with pytest.raises(PrivacyError, match=match):
        local_gaussian(*args, **kwargs)
