"""SecureFedAvgRound: a simulated FedAvg round under PET masking gives the example-weighted
mean of exactly the clients whose update and seed arrived and fit, within the fixed-point
precision, round after round, and agrees with the plain FedAvgRound."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.components import flax_model, padded_data_source
from bbjax.errors import ComponentError, InvalidArgument
from bbjax.modules import FedAvgRound
from bbjax.modules.secure_fedavg import SecureFedAvgRound
from bbjax.protocols.pet import MaskConfig
from bbjax.simulation import Peers, Simulation
from tests.tiny_models import Linear, cross_entropy

SIZES = [7, 12, 20, 30, 9, 15]
OVER_CAP, POISONED = 3, 4  # 30 examples > MAX_WEIGHT; a NaN feature makes its update NaN
MAX_WEIGHT = 25.0
# round r runs SCHEDULE[r] (-1: an empty cohort slot); the last round runs nobody
SCHEDULE = np.array([[0, 1, 2, 5], [1, 3, 4, 5], [0, 2, 3, -1], [5, 4, -1, 0], [2, 0, 1, 5],
                     [-1, -1, -1, -1]], np.int32)
DROPOUT = 0.3
E = 10**10  # the precision of F32 configs (vector and unit)


def _data(seed: int = 0) -> bbjax.data.FederatedData:
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(n, 6)).astype(np.float32) for n in SIZES]
    xs[POISONED][1, 2] = np.nan
    return bbjax.data.FederatedData.from_clients(
        xs, [rng.integers(0, 3, n).astype(np.int32) for n in SIZES])


DATA = _data()
MODEL = flax_model(Linear(nnx.Rngs(0)), optax.sgd(0.2), cross_entropy)
SOURCE = padded_data_source(DATA.x[0], DATA.y[0], int(DATA.sizes[0]), batch_size=5)
ROUND = SecureFedAvgRound(local_steps=2, max_weight=MAX_WEIGHT)
PET = ROUND.masking(MODEL.init(jax.random.key(0)).params)
BINDINGS = {"model": MODEL, "data": SOURCE, "pet": PET}


def _population(secure: bool) -> dict:
    clients = Peers(len(SIZES), init_args={"data": (DATA.x, DATA.y, DATA.sizes)},
                    cohort=SCHEDULE, dropout=DROPOUT)
    return {"server": 1, "client": clients, **({"sum": 1} if secure else {})}


def _rows(params) -> np.ndarray:
    """Stacked parameters as float64 rows, one per peer."""
    return np.concatenate([np.asarray(a, np.float64).reshape(a.shape[0], -1)
                           for a in jax.tree.leaves(params)], axis=1)


def _tolerance(counts: np.ndarray, mean: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The bound on |unmasked - exact mean|: the fixed-point floors lose less than
    ``n / E`` of ``sum s v`` and of ``sum s`` (``s = count / MAX_WEIGHT``), so the mean is off
    by under ``n (1 + |mean|) / (E sum s)``; float32 adds a few units in the last place of
    the result (the limb-to-float conversions and two divisions, 5 at most) and of the
    weights (``s`` is a float32, 2 of ``max |v|``). Doubled for the reference's own
    float64 rounding and slack."""
    n, total = len(counts), counts.sum() / MAX_WEIGHT
    ulp = 2.0**-24
    fixed = n * (1 + np.abs(mean)) / (E * total)
    return 2 * (fixed + ulp * (5 * np.abs(mean) + 2 * np.abs(rows).max()))


@pytest.fixture(scope="module")
def secure_run():
    """Six rounds of the secure round on one jitted program: per round, the running ids,
    the server's parameters before and after, the clients' trained parameters, metrics."""
    compiled = (bbjax.Compiler(inline=["model", "data"]).bind("model", MODEL)
                .bind("data", SOURCE).bind("pet", PET).compile(ROUND))
    sim = Simulation(compiled, _population(True), BINDINGS)
    step = jax.jit(lambda s, k, i, t: sim.round(s, k, None, i, t))
    states = initial = sim.init(jax.random.key(0))
    rounds = []
    for r in range(len(SCHEDULE)):
        before = _rows(states["server"]["model"].params)[0]
        states, metrics = step(states, jax.random.key(10 + r), r, sim.tables)
        rounds.append({"ids": SCHEDULE[r][SCHEDULE[r] >= 0], "before": before,
                       "after": _rows(states["server"]["model"].params)[0],
                       "local": _rows(states["client"]["model"].params),
                       "metrics": {k: float(v) for k, v in metrics.items()}})
    return initial, rounds


def test_each_round_is_the_weighted_mean_of_exactly_the_included_clients(secure_run):
    """For every subset of the round's running clients, the float64 weighted mean of their
    trained parameters; the server's new model matches exactly one subset within the
    fixed-point tolerance: the clients that fit (never the over-cap or NaN one) and whose
    messages arrived, as many as the round reports."""
    _, rounds = secure_run
    drops = 0
    for r, run in enumerate(rounds):
        m = run["metrics"]
        fit = [i for i in run["ids"] if i not in (OVER_CAP, POISONED)]
        assert m["rejected"] == m["participants"] - m["included"], r
        if m["included"] == 0:
            assert m["unmasked"] == 0 and m["train_loss"] == 0, r
            np.testing.assert_array_equal(run["after"], run["before"])
            continue
        assert m["unmasked"] == 1, r
        matches = []
        for k in range(1, len(fit) + 1):
            for subset in itertools.combinations(fit, k):
                rows, counts = run["local"][list(subset)], np.asarray(SIZES, float)[list(subset)]
                mean = counts @ rows / counts.sum()
                if np.all(np.abs(run["after"] - mean) <= _tolerance(counts, mean, rows)):
                    matches.append(subset)
        assert len(matches) == 1, (r, matches)
        assert len(matches[0]) == m["included"], r
        drops += len(fit) - len(matches[0])
    assert drops > 0  # dropout left some fitting clients out
    assert rounds[-1]["metrics"]["participants"] == 0


def test_the_secure_round_agrees_with_plain_fedavg_over_rounds(secure_run):
    """The same population, cohorts, dropout and initial states under FedAvgRound: the same
    clients take part, the losses agree and the models stay within float32 noise."""
    initial, rounds = secure_run
    compiled = (bbjax.Compiler().bind("model", MODEL).bind("data", SOURCE)
                .compile(FedAvgRound(local_steps=2, max_weight=MAX_WEIGHT)))
    sim = Simulation(compiled, _population(False), {"model": MODEL, "data": SOURCE})
    states = {entry: {slot: initial[entry][slot] for slot in ("model", "data")
                      if slot in initial[entry]} for entry in ("server", "client")}
    step = jax.jit(lambda s, k, i, t: sim.round(s, k, None, i, t))
    for r, run in enumerate(rounds):
        states, metrics = step(states, jax.random.key(10 + r), r, sim.tables)
        for name in ("participants", "rejected"):
            assert float(metrics[name]) == run["metrics"][name], (r, name)
        np.testing.assert_allclose(run["metrics"]["train_loss"], float(metrics["train_loss"]),
                                   rtol=1e-5)
        np.testing.assert_allclose(run["after"], _rows(states["server"]["model"].params)[0],
                                   rtol=1e-5, atol=1e-6)


def test_weighted_rounds_need_max_weight_and_configs_must_be_vectorizable():
    with pytest.raises(InvalidArgument, match="max_weight"):
        SecureFedAvgRound(local_steps=1)
    with pytest.raises(InvalidArgument, match="max_weight"):
        SecureFedAvgRound(local_steps=1, max_weight=-1.0)
    params = MODEL.init(jax.random.key(0)).params
    for config in (MaskConfig("Prime", "F64", "B0", "M3"), MaskConfig("Prime", "F32", "B6", "M3")):
        with pytest.raises(ComponentError, match="vectorized masker"):
            SecureFedAvgRound(max_weight=1.0, mask_config=config).masking(params)
    with pytest.raises(ComponentError, match="float"):
        SecureFedAvgRound(max_weight=1.0).masking({"steps": jnp.zeros((), jnp.int32)})
