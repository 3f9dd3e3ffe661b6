"""(ε, δ) spent by repeated rounds of the sampled Gaussian mechanism, by RDP accounting.

Each round samples every client independently with probability ``q`` (Poisson sampling)
and releases a Gaussian-noised sum of updates clipped to ``C`` with noise std ``z · C``
(equivalently, noise ``z · C / n`` on a mean over ``n``). The Rényi DP of one round is that
of the sampled Gaussian mechanism (Mironov, Talwar & Zhang 2019); rounds compose by adding
RDP; (ε, δ) comes from the tightest conversion over the RDP orders (Balle et al. 2020,
Prop. 12). The numbers are computed by Google's ``dp-accounting`` package (imported on
first use), under add-or-remove-one-client adjacency.

A fixed-size cohort of ``m`` of ``N`` clients (:func:`bbjax.selection.select_fraction`)
is usually accounted as Poisson sampling with ``q = m / N``, a common approximation;
:func:`bbjax.selection.select_available` with constant availability ``q`` and no
``cohort_size`` is Poisson sampling exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from bbjax.errors import PrivacyError
from bbjax._checks import check_count, check_nonnegative, check_open_unit


class PrivacySpent(NamedTuple):
    """The guarantee after ``rounds`` rounds: (``epsilon``, ``delta``)-DP, attained at RDP
    order ``order`` (None before the first round)."""

    rounds: int
    epsilon: float
    delta: float
    order: float | None


class Accountant(NamedTuple):
    """``init()`` is the guarantee before any round; ``step(spent, rounds=1)`` the
    guarantee after ``rounds`` more."""

    init: Callable[[], PrivacySpent]
    step: Callable[..., PrivacySpent]


def _dp_accounting():
    try:
        import dp_accounting
    except ImportError as err:
        raise PrivacyError(
            "privacy accounting needs the dp-accounting package: pip install 'dp-accounting>=0.6'"
        ) from err
    return dp_accounting


def sampled_gaussian_accountant(
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    orders: Sequence[float] | None = None,
) -> Accountant:
    """RDP accountant for rounds of the Poisson-sampled Gaussian mechanism.

    ``noise_multiplier`` is ``z`` (for adaptive clipping, the ``z`` given to the mechanism,
    not the update share ``z_Δ``); ``sample_rate`` is ``q`` in (0, 1]; ``orders`` are the
    RDP orders (> 1) searched, by default dp-accounting's.
    """
    z = check_nonnegative("noise_multiplier", noise_multiplier, error=PrivacyError)
    if not 0.0 < sample_rate <= 1.0:
        raise PrivacyError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    target_delta = check_open_unit("delta", delta, error=PrivacyError)
    if orders is not None:
        orders = tuple(float(a) for a in orders)
        if not orders or min(orders) <= 1.0:
            raise PrivacyError(f"orders must be a non-empty list of numbers > 1, got {orders!r}")
    dpa = _dp_accounting()
    event = dpa.PoissonSampledDpEvent(float(sample_rate), dpa.GaussianDpEvent(z))

    def init() -> PrivacySpent:
        return PrivacySpent(0, 0.0, target_delta, None)

    def step(spent: PrivacySpent, rounds: int = 1) -> PrivacySpent:
        total = spent.rounds + check_count("rounds", rounds, error=PrivacyError)
        accountant = dpa.rdp.RdpAccountant(orders)
        accountant.compose(event, total)
        epsilon, order = accountant.get_epsilon_and_optimal_order(target_delta)
        return PrivacySpent(total, float(epsilon), target_delta, float(order))

    return Accountant(init, step)
