"""SecureFedAvgRound: a simulated FedAvg round under PET masking gives the example-weighted
mean of exactly the clients whose update and seed arrived and fit, within the fixed-point
precision, round after round, and agrees with the plain FedAvgRound."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.components import Component, Role, flax_model, padded_data_source
from bbjax.components.pet_masking import DEFAULT_MASK_CONFIG
from bbjax.errors import AggregationError, ComponentError, InvalidArgument
from bbjax.modules import FedAvgRound
from bbjax.modules.secure_fedavg import SecureFedAvgRound
from bbjax.protocols.pet import Aggregation, MaskConfig, Masker, MaskSeed, limbs
from bbjax.simulation import Peers, Simulation
from bbjax.models import LogisticRegression, cross_entropy

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
MODEL = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.2), cross_entropy)
SOURCE = padded_data_source(DATA.x[0], DATA.y[0], int(DATA.sizes[0]), batch_size=5)
ROUND = SecureFedAvgRound(local_steps=2, max_weight=MAX_WEIGHT, num_clients=SCHEDULE.shape[1])
PET = ROUND.masking(MODEL.init(jax.random.key(0)).params)
LENGTH = 6 * 3 + 3  # LogisticRegression(6, 3)'s parameters; the loss follows them


def recording(inner: Component, k: int) -> Component:
    """``inner`` that also keeps, in its state, what the sum participants' ``mask_sum`` and
    the server's ``aggregate`` were given: the seeds, the masked models, the rows used (of
    a cohort of ``k``: the round's ``num_clients``)."""
    m = LENGTH + 2

    def init(key):
        return {"inner": inner.init(key), "seeds": jnp.zeros((k, 8), jnp.uint32),
                "masked": (jnp.zeros((k, m), jnp.uint32),) * 2, "used": jnp.zeros(k, bool)}

    def delegate(method, **record):
        def call(state, *inputs):
            new, out = inner.methods[method](state["inner"], *inputs)
            seen = {field: inputs[i] for field, i in record.items()}
            return {**state, "inner": new, **seen}, out
        return call

    return Component(Role.PROTOCOL, init, {
        "mask": delegate("mask"), "mask_sum": delegate("mask_sum", seeds=0, used=1),
        "aggregate": delegate("aggregate", masked=0, used=1), "unmask": delegate("unmask")},
        "recording")


PROBE = recording(PET, SCHEDULE.shape[1])
BINDINGS = {"model": MODEL, "data": SOURCE, "pet": PROBE}


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


def _seen(state) -> dict:
    """What the one server's or sum participant's recording kept."""
    return {field: jax.tree.map(lambda a: np.asarray(a)[0], state[field])
            for field in ("seeds", "masked", "used")}


@pytest.fixture(scope="module")
def secure_run():
    """Six rounds of the secure round on one jitted program: per round, the running ids,
    the server's parameters before and after, the clients' trained parameters, metrics."""
    compiled = (bbjax.Compiler(inline=["model", "data"]).bind("model", MODEL)
                .bind("data", SOURCE).bind("pet", PROBE).compile(ROUND))
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
                       "server": _seen(states["server"]["pet"]),
                       "sum": _seen(states["sum"]["pet"]),
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


def test_the_server_sees_only_masked_models_and_the_sum_participants_only_seeds(secure_run):
    """Row by row, what the server aggregated, less the mask the reference derives from
    the seed the sum participants got: the unit element is exactly the encoding of a
    float32 scalar within an ulp of count / max_weight (XLA may divide by a reciprocal),
    the parameter elements are exactly the reference Masker's masking of the client's
    trained parameters with that scalar and seed, no element equals its plain encoding,
    the masked elements spread uniformly over the group (a Kolmogorov-Smirnov test) and
    the decoded losses give the round's mean loss."""
    _, rounds = secure_run
    vect, unit = DEFAULT_MASK_CONFIG.vect, DEFAULT_MASK_CONFIG.unit
    b, e, b1, e1 = int(vect.add_shift), vect.exp_shift, int(unit.add_shift), unit.exp_shift
    spread, checked = [], 0
    for r, run in enumerate(rounds):
        server, summed = run["server"], run["sum"]
        np.testing.assert_array_equal(server["used"], summed["used"])
        losses, scalars = [], []
        for j in np.flatnonzero(server["used"]):
            client = SCHEDULE[r][j]
            masked = [int(lo) | int(hi) << 32 for lo, hi in zip(server["masked"][0][j],
                                                                server["masked"][1][j])]
            seed = MaskSeed(np.asarray(summed["seeds"][j], "<u4").tobytes())
            mask = seed.derive_mask(LENGTH + 1, DEFAULT_MASK_CONFIG)
            unit_plain = (masked[-1] - mask.unit.value) % unit.order
            s = np.float32(unit_plain / e1 - b1)  # the float32 scalar the client masked
            assert unit_plain == math.floor((Fraction(float(s)) + b1) * e1), (r, j)
            assert abs(s - SIZES[client] / MAX_WEIGHT) <= 2**-22, (r, j)  # count / max_weight
            plain = [(v - m) % vect.order for v, m in zip(masked[:-1], mask.vect.data)]
            assert all(v != p for v, p in zip(masked[:-1], plain)), (r, j)
            decoded = (np.array(plain, np.float64) / e - b) / float(s)
            weights = np.concatenate([run["local"][client], [0.0]]).astype(np.float32)
            _, want = Masker(DEFAULT_MASK_CONFIG).mask(s, weights, seed=seed)
            assert masked[:LENGTH] == list(want.vect.data[:LENGTH]), (r, j)
            losses.append(decoded[LENGTH])
            scalars.append(float(s))
            spread += [v / vect.order for v in masked[:-1]] + [masked[-1] / unit.order]
            checked += 1
        if scalars:
            mean_loss = np.dot(scalars, losses) / np.sum(scalars)
            np.testing.assert_allclose(run["metrics"]["train_loss"], mean_loss, rtol=1e-5)
    assert checked >= 8
    values = np.sort(spread)
    n = len(values)
    ks = max(np.max(np.arange(1, n + 1) / n - values), np.max(values - np.arange(n) / n))
    assert ks < 1.95 / np.sqrt(n)  # the Kolmogorov-Smirnov statistic's 0.1% critical value


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


def test_the_pet_slot_refuses_what_does_not_fit_before_any_masking():
    state, rows = PET.init(jax.random.key(0)), jnp.zeros((1001, LENGTH + 2), jnp.uint32)
    with pytest.raises(AggregationError, match="TooManyModels: 1001 models"):
        PET.call("aggregate", state, (rows, rows), jnp.ones(1001, bool))
    with pytest.raises(AggregationError, match="TooManyModels"):
        PET.call("mask_sum", state, jnp.zeros((1001, 8), jnp.uint32), jnp.ones(1001, bool))
    with pytest.raises(ComponentError, match=r"masked must be two uint32\[k, 23\]"):
        PET.call("aggregate", state, (rows[:, :5], rows[:, :5]), jnp.ones(1001, bool))
    with pytest.raises(ComponentError, match=r"seeds must be uint32\[k, 8\]"):
        PET.call("mask_sum", state, jnp.zeros((3, 7), jnp.uint32), jnp.ones(3, bool))
    with pytest.raises(ComponentError, match="values"):
        PET.call("mask", state, {"w": jnp.zeros(3)}, jnp.float32(1))


def test_aggregate_and_unmask_match_the_exact_aggregation():
    """The server's modular sum of random masked models (some rows left out) equals the
    exact Aggregation's, and unmasking it with the exact mask sum gives the reference's
    weighted mean (negative and positive values) to float32 precision; no row: not ok."""
    rng = np.random.default_rng(3)
    n, length = 6, LENGTH + 1
    scalars = rng.uniform(0, 1, n).astype(np.float32)
    weights = rng.uniform(-90, 90, (n, length)).astype(np.float32)  # |s w| below B = 100
    seeds = [MaskSeed(rng.bytes(32)) for _ in range(n)]
    objects = [Masker(DEFAULT_MASK_CONFIG).mask(s, w, seed=seed)[1]
               for s, w, seed in zip(scalars, weights, seeds)]
    included = np.array([True, False, True, True, False, True])
    models, masks = (Aggregation(DEFAULT_MASK_CONFIG, length) for _ in range(2))
    for obj, seed, used in zip(objects, seeds, included):
        if used:
            models.aggregate(obj)
            masks.aggregate(seed.derive_mask(length, DEFAULT_MASK_CONFIG))
    rows = limbs.u64_from_ints([[*o.vect.data, o.unit.value] for o in objects])
    state = PET.init(jax.random.key(0))
    total = jax.jit(lambda r, u: PET.call("aggregate", state, r, u)[1])(tuple(rows), included)
    exact = models.masked_object()
    assert limbs.u64_to_uint64(limbs.U64(*total)).tolist() == [*exact.vect.data,
                                                                exact.unit.value]
    mask = limbs.u64_from_ints([*masks.masked_object().vect.data,
                                masks.masked_object().unit.value])
    unmask = jax.jit(lambda t, m, c: PET.call("unmask", state, t, m, c)[1])
    (params, loss), scalar_sum, ok = unmask(total, tuple(mask), jnp.int32(included.sum()))
    got = np.concatenate([np.ravel(a) for a in jax.tree.leaves(params)] + [np.ravel(loss)])
    want = models.unmask(masks.masked_object())
    assert bool(ok)
    np.testing.assert_allclose(float(scalar_sum), scalars[included].astype(np.float64).sum(),
                               rtol=2**-22)
    np.testing.assert_allclose(got, want, rtol=2**-21, atol=2**-21 * np.abs(want).max())
    _, _, ok = unmask(total, tuple(mask), jnp.int32(0))
    assert not bool(ok)
