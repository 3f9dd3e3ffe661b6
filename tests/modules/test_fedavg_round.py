"""FedAvgRound's server rejects lying clients (a NaN or infinite update, a NaN loss, a NaN,
negative or over-cap example count) in each of its aggregation paths, simulated and on
installed Nodes; the ``rejected`` output counts them and the global model is the honest
clients' aggregate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.components import Component, Role, flax_model, rule_aggregator, scaffold_model
from bbjax.errors import AggregatorError, InvalidArgument
from bbjax.modules import FedAvgRound, ScaffoldRound
from bbjax.runtime.install import install
from bbjax.runtime.node import NodeConfig
from bbjax.simulation import Peers, Simulation, simulate
from bbjax.models import LogisticRegression, cross_entropy
from tests.hosting import run_round
from tests.aggregators import reference as ref

N, MAX = 5, 100.0
HONEST, NAN_UPDATE, INF_UPDATE, NAN_LOSS, NEGATIVE_COUNT, NAN_COUNT, OVER_CAP = range(7)
LIES = {"nan_update": NAN_UPDATE, "inf_update": INF_UPDATE, "nan_loss": NAN_LOSS,
        "negative_count": NEGATIVE_COUNT, "nan_count": NAN_COUNT, "count_over_cap": OVER_CAP}


def liar(model: Component, lie: int = HONEST) -> Component:
    """``model`` on a client that trains honestly but, by its ``lie``, sends parameters with
    a NaN or +inf in every leaf, or reports a NaN loss; its own state stays finite."""

    def init(key, lie=lie):
        return {"inner": model.init(key), "lie": jnp.asarray(lie, jnp.int32)}

    def delegate(method):
        def call(state, *inputs):
            inner, out = model.methods[method](state["inner"], *inputs)
            return {"inner": inner, "lie": state["lie"]}, out
        return call

    def params(state):
        _, p = model.methods["params"](state["inner"])
        bad = jnp.select([state["lie"] == NAN_UPDATE, state["lie"] == INF_UPDATE],
                         [jnp.nan, jnp.inf], 0.0)
        return state, jax.tree.map(lambda a: a.at[(0,) * a.ndim].add(bad), p)

    def train(state, x, y):
        state, loss = delegate("train")(state, x, y)
        return state, jnp.where(state["lie"] == NAN_LOSS, jnp.nan, loss)

    methods = {m: delegate(m) for m in model.methods}
    methods.update(params=params, train=train)
    return Component(Role.MODEL, init, methods, "liar")


def batch_source(x=None, y=None, count=1.0, lie=HONEST) -> Component:
    """A DataSource serving one batch every step and reporting ``count`` examples, or, by
    its ``lie``, -1, NaN or ``10 * MAX``."""
    x = np.zeros((8, 6), np.float32) if x is None else x
    y = np.zeros(8, np.int32) if y is None else y

    def init(key, x=x, y=y, count=count, lie=lie):
        return {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.int32),
                "count": jnp.asarray(count, jnp.float32), "lie": jnp.asarray(lie, jnp.int32)}

    def num_examples(s):
        lie = s["lie"]
        return s, jnp.select([lie == NEGATIVE_COUNT, lie == NAN_COUNT, lie == OVER_CAP],
                             [-1.0, jnp.nan, 10 * MAX], s["count"])

    return Component(Role.DATA_SOURCE, init, {"next_batch": lambda s: (s, (s["x"], s["y"])),
                                              "num_examples": num_examples}, "batch_source")


TRAINED = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.3), cross_entropy)
MODEL = liar(TRAINED)
SOURCE = batch_source()


def _clients(lies, seed=0):
    """Per-client data, example counts in [5, 50) and lies, as simulation init_args."""
    r = np.random.default_rng(seed)
    n = len(lies)
    xs = r.normal(size=(n, 8, 6)).astype(np.float32)
    ys = r.integers(0, 3, size=(n, 8)).astype(np.int32)
    counts = r.integers(5, 50, size=n).astype(np.float32)
    lies = np.asarray(lies, np.int32)
    return {"model": (lies,), "data": (xs, ys, counts, lies)}, counts


def _compile(module, **slots):
    compiler = bbjax.Compiler().bind("model", MODEL).bind("data", SOURCE)
    for slot, component in slots.items():
        compiler = compiler.bind(slot, component)
    return compiler.compile(module)


def _local(states, i=None):
    """The clients' own trained parameters (float64 rows, one per client) or client i's."""
    params = states["client"]["model"]["inner"].params
    rows = np.concatenate([np.asarray(a, np.float64).reshape(a.shape[0], -1)
                           for a in jax.tree.leaves(params)], axis=1)
    return rows if i is None else rows[i]


def _server(states):
    return np.concatenate([np.asarray(a[0], np.float64).ravel()
                           for a in jax.tree.leaves(states["server"]["model"]["inner"].params)])


@pytest.fixture(scope="module")
def default_round():
    return _compile(FedAvgRound(local_steps=2, max_weight=MAX))


@pytest.mark.parametrize("lie", list(LIES))
def test_simulated_default_round_keeps_the_honest_weighted_mean(default_round, lie):
    lies = [HONEST] * N
    lies[2] = LIES[lie]
    init_args, counts = _clients(lies, seed=LIES[lie])
    history = simulate(default_round, {"server": 1, "client": Peers(N, init_args=init_args)}, 3,
                       jax.random.PRNGKey(0), bindings={"model": MODEL, "data": SOURCE})
    np.testing.assert_array_equal(history["rejected"], [1, 1, 1])
    np.testing.assert_array_equal(history["participants"], [N] * 3)
    assert np.isfinite(history["train_loss"]).all()
    honest = np.arange(N) != 2
    local = _local(history.states)
    want = counts[honest] @ local[honest] / counts[honest].sum()  # the last round's mean
    np.testing.assert_allclose(_server(history.states), want, rtol=1e-5, atol=1e-6)


def test_a_round_with_every_client_rejected_keeps_the_global_model(default_round):
    init_args, _ = _clients([NAN_UPDATE, INF_UPDATE, NAN_LOSS, NEGATIVE_COUNT, OVER_CAP])
    sim = Simulation(default_round, {"server": 1, "client": Peers(N, init_args=init_args)},
                     {"model": MODEL, "data": SOURCE})
    states = sim.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(1))
    assert int(metrics["rejected"]) == N and float(metrics["train_loss"]) == 0.0
    np.testing.assert_array_equal(_server(new), _server(states))


def test_simulated_median_rule_ignores_lying_clients():
    compiled = _compile(FedAvgRound(local_steps=2, rule=bbjax.aggregators.median(),
                                    num_clients=N, max_weight=MAX))
    lies = [HONEST, NAN_UPDATE, HONEST, NAN_COUNT, HONEST]
    init_args, _ = _clients(lies, seed=7)
    history = simulate(compiled, {"server": 1, "client": Peers(N, init_args=init_args)}, 2,
                       jax.random.PRNGKey(0), bindings={"model": MODEL, "data": SOURCE})
    np.testing.assert_array_equal(history["rejected"], [2, 2])
    honest = np.asarray(lies) == HONEST
    np.testing.assert_allclose(_server(history.states),
                               np.median(_local(history.states)[honest], axis=0), rtol=1e-6)


def test_a_bound_fedadam_keeps_its_moments_to_the_honest_clients():
    initial = MODEL.init(jax.random.PRNGKey(0))["inner"].params
    hyper = dict(eta=0.05, beta_1=0.9, beta_2=0.99, tau=1e-9)
    aggregator = rule_aggregator(bbjax.aggregators.fedadam(**hyper), N, initial)
    compiled = _compile(FedAvgRound(local_steps=2, num_clients=N, aggregator=True,
                                    max_weight=MAX), aggregator=aggregator)
    lies = [INF_UPDATE, HONEST, NEGATIVE_COUNT, HONEST, HONEST]
    init_args, counts = _clients(lies, seed=8)
    bindings = {"model": MODEL, "data": SOURCE, "aggregator": aggregator}
    sim = Simulation(compiled, {"server": 1, "client": Peers(N, init_args=init_args)}, bindings)
    states, step = sim.init(jax.random.PRNGKey(0)), jax.jit(sim.round)
    honest = np.asarray(lies) == HONEST
    current = np.concatenate([np.asarray(a, np.float64).ravel()
                              for a in jax.tree.leaves(initial)])
    m = v = None
    for r in range(3):
        states, metrics = step(states, jax.random.PRNGKey(r))
        assert int(metrics["rejected"]) == 2
        want, m, v = ref.fedopt_round("adam", [current], [[row] for row in _local(states)[honest]],
                                      counts[honest], r + 1, m, v, **hyper)
        got = _server(states)
        np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5)
        rule_state = states["server"]["aggregator"].rule_state
        moments = [np.concatenate([np.asarray(a[0], np.float64).ravel()
                                   for a in jax.tree.leaves(t)]) for t in (rule_state.m,
                                                                           rule_state.v)]
        np.testing.assert_allclose(moments[0], m[0], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(moments[1], v[0], rtol=1e-4, atol=1e-9)
        current = got


def test_scaffold_round_keeps_a_lying_clients_control_delta_out():
    lr, steps = 0.2, 2
    model = scaffold_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), lr, cross_entropy)
    initial = model.init(jax.random.PRNGKey(0)).params
    aggregator = rule_aggregator(bbjax.aggregators.scaffold(num_clients=N), N, initial)
    bindings = {"model": model, "data": SOURCE, "aggregator": aggregator}
    compiled = (bbjax.Compiler().bind("model", model).bind("data", SOURCE)
                .bind("aggregator", aggregator).compile(ScaffoldRound(steps, num_clients=N)))
    lies = [HONEST, HONEST, NEGATIVE_COUNT, HONEST, HONEST]
    init_args, counts = _clients(lies, seed=9)
    init_args.pop("model")
    sim = Simulation(compiled, {"server": 1, "client": Peers(N, init_args=init_args)}, bindings)
    states, metrics = jax.jit(sim.round)(sim.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    assert int(metrics["rejected"]) == 1
    flat = lambda tree: np.concatenate([np.asarray(a, np.float64).ravel()  # noqa: E731
                                        for a in jax.tree.leaves(tree)])
    honest = np.asarray(lies) == HONEST
    client = states["client"]["model"]
    y = np.stack([flat(jax.tree.map(lambda a, i=i: a[i], client.params)) for i in range(N)])
    x_g = flat(initial)
    p = counts[honest] / counts[honest].sum()
    want_global = x_g + p @ (y[honest] - x_g)
    want_control = ((x_g - y[honest]) / (steps * lr)).sum(0) / N  # c_i and c start at 0
    np.testing.assert_allclose(flat(jax.tree.map(lambda a: a[0], states["server"]["model"].params)),
                               want_global, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat(states["server"]["aggregator"].rule_state.control),
                               want_control, rtol=1e-4, atol=1e-5)


def test_installed_nodes_reject_lying_clients_and_output_the_count(default_round):
    ids = (1, 2, 3, 4)
    lies = {1: HONEST, 2: NAN_UPDATE, 3: HONEST, 4: OVER_CAP}
    init_args, counts = _clients([lies[p] for p in ids], seed=11)
    xs, ys, _, _ = init_args["data"]
    server = install(0, default_round, ["fedavg", "fedavg_server"],
                     {"model": MODEL, "data": SOURCE},
                     NodeConfig(peers={"client": ids, "server": [0]}))
    clients = {p: install(p, default_round, ["fedavg_client"],
                          {"model": liar(TRAINED, lies[p]),
                           "data": batch_source(xs[i], ys[i], counts[i], lies[p])},
                          NodeConfig(peers={"server": [0]}), key=jax.random.PRNGKey(10 + p))
               for i, p in enumerate(ids)}
    nodes = {0: server, **clients}
    for _ in range(2):
        outputs = run_round(server, nodes)
        assert int(outputs["rejected"]) == 2 and int(outputs["participants"]) == 4
        assert np.isfinite(outputs["train_loss"])
    local = np.stack([np.concatenate([np.asarray(a, np.float64).ravel() for a in
                                      jax.tree.leaves(clients[p].states["model"]["inner"].params)])
                      for p in ids])
    honest = np.array([lies[p] == HONEST for p in ids])
    want = counts[honest] @ local[honest] / counts[honest].sum()
    got = np.concatenate([np.asarray(a, np.float64).ravel()
                          for a in jax.tree.leaves(server.states["model"]["inner"].params)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, error, match", [
    (lambda: FedAvgRound(max_weight=0), AggregatorError, "max_weight must be a finite"),
    (lambda: FedAvgRound(max_weight=float("nan")), AggregatorError, "max_weight"),
    (lambda: ScaffoldRound(max_weight=-1.0), AggregatorError, "max_weight"),
    (lambda: FedAvgRound(local_steps=0), InvalidArgument, "local_steps"),
    (lambda: FedAvgRound(rule=bbjax.aggregators.median()), InvalidArgument, "num_clients"),
    (lambda: FedAvgRound(rule=bbjax.aggregators.median(), num_clients=3, aggregator=True),
     InvalidArgument, "not both"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_chained_algorithm_aggregates_the_admitted_clients_deltas():
    """FedAvgRound(rule=chain(clip, fedavg)): the new global model is the initial one plus
    the count-weighted mean of the admitted clients' deltas, each clipped to norm C
    (float64 reference); the NaN client is rejected before the chain."""
    clip_norm = 0.05
    rule = bbjax.algorithms.chain(bbjax.privacy.clip(clip_norm), bbjax.aggregators.fedavg())
    compiled = _compile(FedAvgRound(local_steps=2, rule=rule, num_clients=N, max_weight=MAX))
    lies = [HONEST, HONEST, NAN_UPDATE, HONEST, HONEST]
    init_args, counts = _clients(lies, seed=3)
    sim = Simulation(compiled, {"server": 1, "client": Peers(N, init_args=init_args)},
                     {"model": MODEL, "data": SOURCE})
    states = sim.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(sim.round)(states, jax.random.PRNGKey(1))
    assert int(metrics["rejected"]) == 1
    honest = np.asarray(lies) == HONEST
    deltas = _local(new)[honest] - _server(states)
    norms = np.linalg.norm(deltas, axis=1, keepdims=True)
    assert (norms > clip_norm).any()  # the clipping is active
    clipped = deltas * np.minimum(1.0, clip_norm / norms)
    want = _server(states) + counts[honest] @ clipped / counts[honest].sum()
    np.testing.assert_allclose(_server(new), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidArgument, match="rule must be"):
        FedAvgRound(rule=bbjax.compression.top_k(2), num_clients=N)
