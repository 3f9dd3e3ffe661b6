import math

import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

from bbjax.privacy import sampled_gaussian_accountant

from bbjax.errors import PrivacyError

pytest.importorskip("dp_accounting")

INTEGER_ORDERS = list(range(2, 64))


def np_rdp_sampled_gaussian(q, z, alpha):
    """RDP at integer order alpha of one Poisson-sampled Gaussian round, float64
    (Mironov, Talwar & Zhang 2019, Sec. 3.3):
    log(Σ_k C(α,k) (1−q)^(α−k) q^k exp((k²−k) / 2z²)) / (α − 1)."""
    k = np.arange(alpha + 1, dtype=np.float64)
    log_binom = gammaln(alpha + 1) - gammaln(k + 1) - gammaln(alpha - k + 1)
    log_q = np.log(q) if q > 0 else -np.inf
    log_1mq = np.log1p(-q) if q < 1 else -np.inf
    with np.errstate(invalid="ignore"):
        terms = (
            log_binom
            + np.where(k > 0, k * log_q, 0.0)
            + np.where(alpha - k > 0, (alpha - k) * log_1mq, 0.0)
        )
    return float(logsumexp(terms + (k * k - k) / (2 * z * z))) / (alpha - 1)


def np_epsilon(rdp, orders, delta, conversion):
    """(ε, order) from total RDP: Mironov 2017 Prop. 3 ("basic") or Balle et al. 2020 Prop. 12."""
    eps = []
    for r, a in zip(rdp, orders):
        if conversion == "basic":
            eps.append(r - math.log(delta) / (a - 1))
        else:
            eps.append(r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1))
    best = int(np.argmin(eps))
    return eps[best], orders[best]


def np_total_rdp(q, z, rounds, orders):
    return [rounds * np_rdp_sampled_gaussian(q, z, a) for a in orders]


@pytest.mark.parametrize(
    "z,q,rounds,delta", [(1.1, 0.01, 1000, 1e-5), (0.8, 0.1, 50, 1e-6), (4.0, 0.001, 20000, 1e-5)]
)
def test_epsilon_matches_numpy_rdp_reference(z, q, rounds, delta):
    accountant = sampled_gaussian_accountant(z, q, delta, orders=INTEGER_ORDERS)
    spent = accountant.step(accountant.init(), rounds)
    eps, order = np_epsilon(
        np_total_rdp(q, z, rounds, INTEGER_ORDERS), INTEGER_ORDERS, delta, "improved"
    )
    assert spent.rounds == rounds and spent.delta == delta
    assert spent.epsilon == pytest.approx(eps, rel=1e-9)
    assert spent.order == order


def test_unsampled_gaussian_has_rdp_alpha_over_2z2():
    z, rounds, delta = 2.0, 30, 1e-5
    accountant = sampled_gaussian_accountant(z, 1.0, delta, orders=INTEGER_ORDERS)
    expected, _ = np_epsilon(
        [rounds * a / (2 * z * z) for a in INTEGER_ORDERS], INTEGER_ORDERS, delta, "improved"
    )
    assert accountant.step(accountant.init(), rounds).epsilon == pytest.approx(expected, rel=1e-9)


def test_opacus_published_example():
    # opacus.ai/api/compute_dp_sgd_privacy.html: sample rate 1%, noise multiplier 1.0, 300 steps,
    # alphas [2, 5, 10, 20, 100] -> epsilon = 2.39 at delta = 1e-5, optimal alpha 5.
    accountant = sampled_gaussian_accountant(1.0, 0.01, 1e-5, orders=[2, 5, 10, 20, 100])
    spent = accountant.step(accountant.init(), 300)
    assert round(spent.epsilon, 2) == 2.39 and spent.order == 5


@pytest.mark.parametrize(
    "z,q,rounds,published",
    [
        # tensorflow/privacy tutorials/README.md (MNIST, 60000 examples, batch 256, delta 1e-5)
        (1.12, 256 / 60000, 60 * 60000 // 256, 2.92),
        (1.2, 256 / 60000, 10 * 60000 // 256, 1.20),
        # Abadi et al. 2016, Sec. 3.1: q = 0.01, sigma = 4, T = 10000, delta = 1e-5 -> eps ~ 1.26
        (4.0, 0.01, 10000, 1.26),
    ],
)
def test_published_values_with_the_basic_conversion(z, q, rounds, published):
    eps_basic, _ = np_epsilon(
        np_total_rdp(q, z, rounds, INTEGER_ORDERS), INTEGER_ORDERS, 1e-5, "basic"
    )
    assert round(eps_basic, 2) == published
    accountant = sampled_gaussian_accountant(z, q, 1e-5, orders=INTEGER_ORDERS)
    spent = accountant.step(accountant.init(), rounds)
    assert spent.epsilon <= eps_basic  # the conversion used is never looser than the basic one


def test_epsilon_is_reported_after_each_round_and_grows():
    accountant = sampled_gaussian_accountant(1.0, 0.05, 1e-5)
    spent = accountant.init()
    assert spent == (0, 0.0, 1e-5, None)
    history = []
    for _ in range(4):
        spent = accountant.step(spent)
        history.append(spent.epsilon)
    assert spent.rounds == 4 and np.all(np.diff(history) > 0)
    assert accountant.step(accountant.init(), 4).epsilon == pytest.approx(history[-1], rel=1e-12)


def test_zero_noise_is_infinite_epsilon():
    accountant = sampled_gaussian_accountant(0.0, 0.1, 1e-5)
    assert accountant.step(accountant.init()).epsilon == math.inf


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((-1.0, 0.1, 1e-5), {}, "noise_multiplier"),
        ((1.0, 0.0, 1e-5), {}, "sample_rate"),
        ((1.0, 1.5, 1e-5), {}, "sample_rate"),
        ((1.0, 0.1, 0.0), {}, "delta"),
        ((1.0, 0.1, 1e-5), {"orders": [1.0, 2.0]}, "orders"),
        ((1.0, 0.1, 1e-5), {"orders": []}, "orders"),
    ],
)
def test_bad_parameters_raise(args, kwargs, match):
    with pytest.raises(PrivacyError, match=match):
        sampled_gaussian_accountant(*args, **kwargs)


def test_bad_round_count_raises():
    accountant = sampled_gaussian_accountant(1.0, 0.1, 1e-5)
    with pytest.raises(PrivacyError, match="rounds"):
        accountant.step(accountant.init(), 0)
