"""The parameter server: synchronous equals AllReduce, stale synchronous with τ = 0 and no
delays equals synchronous, and with delays it equals a float64 numpy run of the SSP
schedule round by round, its staleness never above τ."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.errors import InvalidArgument
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.runtime.install import install
from bbjax.runtime.node import NodeConfig
from bbjax.simulation import Simulation
from bbjax.strategies.parallel import (
    AllReduceRound,
    ParameterServerRound,
    all_reduce_mean,
    all_reduce_population,
    parameter_server_population,
    random_delays,
    replica,
    shard_source,
    split,
    ssp_server,
    ssp_worker,
)
from bbjax.strategies.parallel.shards import data_shard
from tests.hosting import run_round
from tests.strategies.parallel.parallel_reference import (
    assert_tree_close,
    compile_with,
    loss_and_gradient,
    numpy_params,
    shard_rows,
    tree_map,
)

ROWS, FEATURES, CLASSES, BATCH, WORKERS, LEARNING_RATE = 19, 4, 3, 7, 3, 0.4


def data(rng: np.random.Generator):
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    return x, rng.integers(0, CLASSES, ROWS).astype(np.int32)


def model_and_data(x, y, seed: int):
    model = replica(LogisticRegression(FEATURES, CLASSES, rngs=nnx.Rngs(seed)),
                    optax.sgd(LEARNING_RATE), cross_entropy)
    return {"model": model, "data": shard_source(x, y, WORKERS, BATCH)}


def stale_bindings(x, y, seed: int, staleness: int) -> dict:
    return {**model_and_data(x, y, seed), "clock": ssp_worker(staleness),
            "clocks": ssp_server(WORKERS, BATCH)}


def run(module, bindings, population, rounds, inline=True):
    """``simulate``; ``inline=False`` keeps every slot opaque, which XLA compiles in about
    half the time (inlined and opaque partitions compute the same: tests/onnxclient)."""
    return bbjax.simulate(compile_with(module, bindings, inline=inline), population, rounds,
                          jax.random.key(0), bindings=bindings)


def test_synchronous_server_equals_all_reduce_and_unstale_ssp_equals_synchronous():
    rng = np.random.default_rng()
    x, y = data(rng)
    seed = int(rng.integers(1 << 30))
    bindings = model_and_data(x, y, seed)
    sync = run(ParameterServerRound(WORKERS), bindings,
               parameter_server_population(x, y, WORKERS, BATCH), 4, inline=False)
    reduce_bindings = {**bindings, "all_reduce": all_reduce_mean()}
    reduced = run(AllReduceRound(), reduce_bindings,
                  all_reduce_population(x, y, WORKERS, BATCH), 4, inline=False)
    stale = run(ParameterServerRound(WORKERS, staleness=0), stale_bindings(x, y, seed, 0),
                parameter_server_population(x, y, WORKERS, BATCH, np.zeros(WORKERS, int)), 4,
                inline=False)
    want = jax.tree.map(lambda a: np.asarray(a[0]), reduced.states["replica"]["model"].params)
    got = jax.tree.map(lambda a: np.asarray(a[0]), sync.states["server"]["model"].params)
    assert_tree_close(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sync["train_loss"], reduced["train_loss"], rtol=1e-5)
    assert list(sync["gradients"]) == [WORKERS] * 4
    assert_tree_close(stale.states["server"]["model"].params,
                      jax.tree.map(np.asarray, sync.states["server"]["model"].params),
                      rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stale["train_loss"], sync["train_loss"], rtol=1e-6)
    assert list(stale["staleness"]) == [0] * 4 and list(stale["version"]) == [1, 2, 3, 4]


@pytest.mark.slow  # about 15 s on the 2-core CPU: a simulation and four installed Nodes
def test_installed_nodes_exchanging_envelopes_match_the_simulation():
    """The synchronous server on real Nodes (one server, three workers, envelope bytes):
    the parameters and losses ``simulate`` gives."""
    rng = np.random.default_rng()
    x, y = data(rng)
    bindings = model_and_data(x, y, int(rng.integers(1 << 30)))
    compiled = compile_with(ParameterServerRound(WORKERS), bindings)
    history = bbjax.simulate(compiled, parameter_server_population(x, y, WORKERS, BATCH), 3,
                             jax.random.key(0), bindings=bindings)
    xs, ys, sizes, batches = split(x, y, WORKERS, BATCH)
    ids = list(range(1, WORKERS + 1))
    server = install(0, compiled, ["parameter_server", "parameter_server_server"], bindings,
                     NodeConfig(peers={"worker": ids, "server": [0]}))
    workers = {p: install(p, compiled, ["parameter_server_worker"],
                          {"model": bindings["model"],
                           "data": data_shard(xs[i], ys[i], int(batches.max()),
                                              size=int(sizes[i]), batch=int(batches[i]))},
                          NodeConfig(peers={"server": [0]}))
               for i, p in enumerate(ids)}
    losses = [float(run_round(server, {0: server, **workers})["train_loss"])
              for _ in range(3)]
    np.testing.assert_allclose(losses, history["train_loss"], rtol=1e-5)
    assert_tree_close(server.states["model"].params,
                      jax.tree.map(lambda a: np.asarray(a[0]),
                                   history.states["server"]["model"].params),
                      rtol=1e-5, atol=1e-6)


def ssp_reference(params, x, y, delays, staleness, rounds):
    """Float64 numpy run of the SSP schedule: per round the server's parameters and the
    arrivals' count, largest clock lag and largest version lag."""
    _, _, sizes, batches = split(x, y, WORKERS, BATCH)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    clocks = [0] * WORKERS          # the server's count of each worker's pushes
    version = 0
    workers = [{"clock": 0, "busy": False, "remaining": 0, "params": None, "lag": 0,
                "version": 0}
               for _ in range(WORKERS)]
    history = []
    for _ in range(rounds):
        slowest, current = min(clocks), params
        arrivals = []
        for p, w in enumerate(workers):
            if not w["busy"] and w["clock"] - slowest <= staleness:
                w.update(busy=True, remaining=int(delays[p]), params=current,
                         lag=w["clock"] - slowest, version=version)
            if w["busy"] and w["remaining"] == 0:
                rows = starts[p] + shard_rows(sizes, batches, p, w["clock"])
                _, grads = loss_and_gradient(w["params"], x[rows], y[rows])
                arrivals.append((p, grads, w["lag"], version - w["version"]))
                w.update(busy=False, clock=w["clock"] + 1)
            elif w["busy"]:
                w["remaining"] -= 1
        for p, grads, _, _ in arrivals:
            share = batches[p] / BATCH
            params = tree_map(lambda a, g, s=share: a - LEARNING_RATE * s * g, params, grads)
            clocks[p] += 1
        version += bool(arrivals)
        history.append((params, len(arrivals), max([a[2] for a in arrivals], default=0),
                        max([a[3] for a in arrivals], default=0)))
        assert max(clocks) - min(clocks) <= staleness + 1
    return history


@pytest.mark.parametrize("staleness", [0, 2])
def test_stale_synchronous_equals_the_numpy_schedule_round_by_round(staleness):
    rng = np.random.default_rng()
    x, y = data(rng)
    seed = int(rng.integers(1 << 30))
    delays = random_delays(WORKERS, 3, int(rng.integers(1 << 30)))
    delays[0] = 0   # one fast worker, so that the bound binds
    delays[-1] = 3
    bindings = stale_bindings(x, y, seed, staleness)
    compiled = compile_with(ParameterServerRound(WORKERS, staleness), bindings,
                            inline=staleness > 0)  # one of the two runs inlined
    sim = Simulation(compiled,
                     parameter_server_population(x, y, WORKERS, BATCH, delays), bindings)
    states = sim.init(jax.random.key(0))
    step = jax.jit(sim.round)
    rounds = 12
    reference = ssp_reference(numpy_params(bindings["model"].init(None).params), x, y, delays,
                              staleness, rounds)
    size = sum(a.size for a in jax.tree.leaves(states["server"]["model"].params))
    broadcast = WORKERS * (4 * size + 4 + 4)  # parameters, version, slowest clock
    pushed = 4 * size + 4 * 4                 # gradient, loss, count, lag, pulled version
    for r, (params, arrived, lag, version_lag) in enumerate(reference):
        states, metrics = step(states, jax.random.key(r), None, r)
        got = jax.tree.map(lambda a: np.asarray(a[0]), states["server"]["model"].params)
        assert_tree_close(got, params, rtol=2e-5, atol=2e-6)
        assert int(metrics["gradients"]) == arrived, r
        assert int(metrics["bytes_sent"]) == broadcast + arrived * pushed, r  # pushes only
        assert int(metrics["staleness"]) == lag <= staleness, r
        assert int(metrics["version_lag"]) == version_lag, r
    assert max(lag for *_, lag, _ in reference) == staleness  # the bound was reached


@pytest.mark.parametrize("call, message", [
    (lambda: ParameterServerRound(3, staleness=-1), "staleness must be an integer >= 0"),
    (lambda: ParameterServerRound(0), "num_workers must be an integer >= 1"),
    (lambda: ssp_worker(1.5), "staleness must be an integer >= 0"),
    (lambda: random_delays(3, -1, 0), "max_delay must be an integer >= 0"),
    (lambda: parameter_server_population(np.zeros((6, 2)), np.zeros(6), 3, 3, [0, 1]),
     r"delays must be 3 integers >= 0"),
    (lambda: parameter_server_population(np.zeros((6, 2)), np.zeros(6), 3, 3, [0, -1, 0]),
     r"delays must be 3 integers >= 0"),
])
def test_parameter_server_errors(call, message):
    with pytest.raises(InvalidArgument, match=message):
        call()
