"""Workload W1 through ``bbjax.simulate`` against the same rounds written by hand in pure
JAX, one process, interleaved; and what a second ``simulate`` call costs.

W1: FedAvg on FedProx Synthetic(1, 1) (``bbjax.experiments.fedavg``'s
``fedavg-synthetic``: 100 clients of at most 1000 examples, 80% for training), 10 clients
per round, 20 SGD steps of batch 10 at learning rate 0.01, logistic regression, 30 rounds,
the server averaging by example counts. Two pairs, each timed as the 30-round program
(one jitted ``lax.scan``; bbjax's is the one ``simulate`` compiles and caches):

* natural: bbjax with the natural API (``Peers(100, init_args=..., cohort=10)``,
  ``padded_data_source``: bbjax's own cohort draw and batch order) against the hand-written
  round with its sampling inside ``jit`` (``jax.random.choice`` for the cohort, ``randint``
  rows per step, read straight from the padded data). Goal: bbjax / hand <= 1.05.
* injected: a published schedule (10 clients per round) and batch order (each drawn
  client's 20 x 10 rows per round), given to bbjax as ``Peers(cohort=schedule)`` and
  ``replay_data_source`` and to the hand-written scan as arrays. Goal: <= 1.02, and the
  final test accuracy of bbjax, of the hand-written scan and of a plain numpy run of the
  same schedule and batches (float32, and float64) agree (float32 rounding).

Also the end-to-end ``simulate`` call (initial states, rounds, metrics on the host) of the
natural run, and ``simulate``'s cache: the first call's ``compile_seconds``, a second call's
(same shapes, new data), and its share of the first (goal <= 5%).

Ratios are ratios of medians of interleaved samples. Writes
benchmarks/results/simulate_w1_<platform>.json and ..._cache_<platform>.json and one row
each in RESULTS.md (sections simulate_w1 and simulate_cache).

    python benchmarks/simulate_w1.py [--reps 15] [--device cpu|gpu] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402
from simulate_overhead import forward, hand_round  # noqa: E402

from bbjax.compiler import Compiler  # noqa: E402
from bbjax.components import replay_data_source  # noqa: E402
from bbjax.modules import FedAvgRound  # noqa: E402
from bbjax.simulation import Peers, Simulation, clear_cache, simulate  # noqa: E402
from bbjax.experiments import FedAvgConfig, build  # noqa: E402
from bbjax.models import cross_entropy  # noqa: E402
from bbjax.simulation.run import _scan_rounds  # noqa: E402


class BbjaxRun:
    """The ``rounds``-round program ``simulate`` runs for a population (``_scan_rounds``
    jitted with the states donated, as ``simulate`` does). Each call runs it again on the
    states the last call left (the same work; schedules restart at round 0) and returns
    the metrics."""

    def __init__(self, compiled: Any, population: dict, rounds: int, key: jax.Array):
        self.sim = Simulation(compiled, population)
        self.init_key, run_key = jax.random.split(key)
        self.init = jax.jit(self.sim.init)
        self.states = self.init(self.init_key, self.sim.init_args, self.sim.inputs,
                                self.sim.tables)
        self.run = jax.jit(functools.partial(_scan_rounds(self.sim), count=rounds),
                           donate_argnums=0)
        self.args = (run_key, jnp.int32(0), self.sim.inputs, self.sim.tables)

    def __call__(self) -> Any:
        self.states, metrics, _ = self.run(self.states, *self.args)
        return metrics

    def global_params(self) -> Any:
        """The server's model after one run from fresh initial states."""
        states = self.init(self.init_key, self.sim.init_args, self.sim.inputs, self.sim.tables)
        states, _, _ = self.run(states, *self.args)
        return jax.tree.map(lambda a: a[0], states["server"]["model"].params)


class HandRun:
    """A jitted hand-written ``rounds``-round scan from the initial parameters."""

    def __init__(self, fn: Any, params: Any, *args: Any):
        self.fn, self.params, self.args = jax.jit(fn), params, args

    def __call__(self) -> Any:
        return self.fn(self.params, *self.args)[1]

    def global_params(self) -> Any:
        return self.fn(self.params, *self.args)[0]


def hand_natural(cfg: FedAvgConfig, batch: int, key: jax.Array, rounds: int):
    """``simulate_overhead.hand_round`` scanned over ``rounds`` rounds (keys as bbjax's)."""
    one = hand_round(cfg, batch, key)

    def run(params, data):
        return jax.lax.scan(lambda p, r: one(p, data, r), params, jnp.arange(rounds))
    return run


def hand_injected(lr: float):
    """The FedAvg scan over a given ``schedule`` ``[rounds, k]`` and ``batches`` ``[rounds,
    k, steps, batch]`` of rows."""

    def run(params, data, schedule, batches):
        x, y, sizes = data

        def one_round(params, plan):
            ids, rows = plan

            def client(i, rows_i):
                def step(p, r):
                    value, grads = jax.value_and_grad(
                        lambda p: cross_entropy(forward(p, x[i, r]), y[i, r]))(p)
                    return jax.tree.map(lambda a, g: a - lr * g, p, grads), value

                p_i, losses = jax.lax.scan(step, params, rows_i)
                return p_i, losses.mean()

            updated, losses = jax.vmap(client)(ids, rows)
            w = sizes[ids].astype(jnp.float32) / jnp.sum(sizes[ids])
            return jax.tree.map(lambda a: jnp.tensordot(w, a, 1), updated), w @ losses

        return jax.lax.scan(one_round, params, (schedule, batches))
    return run


def numpy_injected(x, y, sizes, schedule, batches, kernel, bias, lr, dtype):
    """The injected W1 in plain numpy (softmax regression, SGD, example-count weights)."""
    x, kernel, bias = x.astype(dtype), kernel.astype(dtype), bias.astype(dtype)
    for ids, rows in zip(schedule, batches):
        new_k, new_b = np.zeros_like(kernel), np.zeros_like(bias)
        weights = sizes[ids].astype(dtype) / sizes[ids].sum()
        for i, rows_i, w in zip(ids, rows, weights):
            k, b = kernel.copy(), bias.copy()
            for r in rows_i:
                xb, yb = x[i, r], y[i, r]
                logits = xb @ k + b
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                p[np.arange(len(yb)), yb] -= 1
                k = k - dtype(lr) * (xb.T @ p) / dtype(len(yb))
                b = b - dtype(lr) * p.mean(0)
            new_k += w * k
            new_b += w * b
        kernel, bias = new_k, new_b
    return kernel, bias


def accuracy(kernel: np.ndarray, bias: np.ndarray, test: Any) -> float:
    x = np.asarray(test.x).reshape(-1, test.x.shape[-1])
    y, mask = np.asarray(test.y).reshape(-1), np.asarray(test.mask).reshape(-1)
    hits = (np.argmax(x @ kernel + bias, -1) == y) & mask
    return float(hits.sum() / mask.sum())


def measure(cfg: FedAvgConfig, rounds: int, reps: int, calls: int) -> dict:
    exp = build(cfg)
    train, key = exp.train, jax.random.PRNGKey(cfg.seed)
    model = exp.bindings["model"]
    start = model.init(key).params
    data = jax.device_put((train.x, train.y, train.sizes))
    sizes = np.asarray(train.sizes)
    batch = min(cfg.batch_size, int(sizes.min()))
    run_key = jax.random.split(key)[1]

    rng = np.random.default_rng(cfg.seed)
    k, steps = cfg.clients_per_round, cfg.local_steps
    schedule = np.stack([rng.choice(cfg.num_clients, k, replace=False)
                         for _ in range(rounds)]).astype(np.int32)
    batches = np.stack([[[rng.choice(sizes[i], batch, replace=False) for _ in range(steps)]
                         for i in row] for row in schedule]).astype(np.int32)
    tables = np.zeros((cfg.num_clients, rounds, steps, batch), np.int32)
    for r, row in enumerate(schedule):
        tables[row, r] = batches[r]
    source = replay_data_source(train.x[0], train.y[0], tables[0], int(sizes[0]))
    injected = Compiler().bind("model", model).bind("data", source).compile(
        FedAvgRound(cfg.local_steps))
    population = {"server": 1, "client": Peers(
        cfg.num_clients, init_args={"data": (train.x, train.y, tables, train.sizes)},
        cohort=schedule)}

    runners = {
        "natural": {"bbjax": BbjaxRun(exp.compiled, exp.population, rounds, key),
                    "hand": HandRun(hand_natural(cfg, batch, run_key, rounds), start, data)},
        "injected": {"bbjax": BbjaxRun(injected, population, rounds, key),
                     "hand": HandRun(hand_injected(cfg.learning_rate), start, data,
                                     jnp.asarray(schedule), jnp.asarray(batches))},
    }
    result: dict[str, Any] = {}
    for name, pair in runners.items():
        samples = timing.interleaved(pair, reps, calls)
        ms = {who: timing.median_ms(values) for who, values in samples.items()}
        result[name] = {"median_ms": ms, "ratio": ms["bbjax"] / ms["hand"],
                        "samples_ms": {w: [v * 1e3 for v in vs] for w, vs in samples.items()}}
        print(f"{name}: bbjax {ms['bbjax']:.1f} ms, hand {ms['hand']:.1f} ms per {rounds} "
              f"rounds; bbjax/hand {result[name]['ratio']:.3f}", flush=True)

    x64 = np.asarray(train.x, np.float64)
    finals = {who: jax.device_get(r.global_params()["out"]) for who, r in
              runners["injected"].items()}
    kernel, bias = np.asarray(start["out"]["kernel"]), np.asarray(start["out"]["bias"])
    y = np.asarray(train.y)
    np32 = numpy_injected(x64, y, sizes, schedule, batches, kernel, bias, cfg.learning_rate,
                          np.float32)
    np64 = numpy_injected(x64, y, sizes, schedule, batches, kernel, bias, cfg.learning_rate,
                          np.float64)
    accuracies = {who: accuracy(np.asarray(p["kernel"]), np.asarray(p["bias"]), exp.test)
                  for who, p in finals.items()}
    accuracies["numpy_float32"] = accuracy(*np32, exp.test)
    accuracies["numpy_float64"] = accuracy(*np64, exp.test)
    accuracies["initial"] = accuracy(kernel, bias, exp.test)
    gap = float(np.max(np.abs(np.asarray(finals["bbjax"]["kernel"]) - np64[0])))
    result["injected"].update(accuracy=accuracies, max_kernel_gap_vs_float64=gap)
    print(f"injected accuracy: {accuracies}; max |kernel - numpy float64| {gap:.2e}", flush=True)

    started = time.perf_counter()
    whole = {"bbjax": lambda: simulate(exp.compiled, exp.population, rounds, key).metrics,
             "hand": runners["natural"]["hand"]}
    simulate(exp.compiled, exp.population, rounds, key)
    samples = timing.interleaved(whole, max(reps // 2, 3), 1)
    ms = {who: timing.median_ms(values) for who, values in samples.items()}
    result["natural"]["simulate_call_ms"] = ms["bbjax"]
    result["natural"]["simulate_call_ratio"] = ms["bbjax"] / ms["hand"]
    print(f"whole simulate call {ms['bbjax']:.1f} ms vs hand {ms['hand']:.1f} ms "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return result


def measure_cache(cfg: FedAvgConfig, rounds: int) -> dict:
    """First and second ``simulate`` call of the natural W1 (new data, same shapes)."""
    exp = build(cfg)
    other = build(cfg.replace(seed=cfg.seed + 1))  # other data and initial model
    clear_cache()
    first = simulate(exp.compiled, exp.population, rounds, jax.random.PRNGKey(0))
    clients = other.population["client"]
    second = simulate(exp.compiled, {**exp.population, "client": Peers(
        clients.count, init_args=clients.init_args, cohort=clients.cohort)}, rounds,
        jax.random.PRNGKey(1))
    calls = {name: {"seconds": h.seconds, "compile_seconds": h.compile_seconds,
                    "run_seconds": h.run_seconds} for name, h in (("first", first),
                                                                  ("second", second))}
    share = second.compile_seconds / first.compile_seconds
    print(f"simulate: first call {first.seconds:.2f} s (compile {first.compile_seconds:.2f} s), "
          f"second {second.seconds:.3f} s (compile {second.compile_seconds:.4f} s, "
          f"{share:.2%} of the first's)", flush=True)
    return {"calls": calls, "second_compile_share": share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20 clients, 4 per round, 5 steps, 5 rounds, 3 reps")
    args = parser.parse_args()
    jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
    cfg = FedAvgConfig()  # fedavg-synthetic: W1's settings
    rounds, reps = 30, args.reps
    if args.quick:
        cfg, rounds, reps = cfg.replace(num_clients=20, clients_per_round=4, local_steps=5,
                                        max_client_size=200), 5, 3
    result = measure(cfg, rounds, reps, args.calls)
    cache = measure_cache(cfg, rounds)
    command = " ".join(["python"] + sys.argv)
    setting = (f"logreg, {cfg.num_clients} clients, {cfg.clients_per_round} per round, "
               f"K={cfg.local_steps}, B={cfg.batch_size}, {rounds} rounds")
    nat, inj = result["natural"], result["injected"]
    acc = inj["accuracy"]
    path = timing.write("simulate_w1", {"config": cfg.to_dict(), "rounds": rounds,
                                        "reps": reps, "results": result, "command": command},
                        [setting, f"{nat['median_ms']['hand']:.1f}",
                         f"{nat['median_ms']['bbjax']:.1f}", f"**{nat['ratio']:.3f}**",
                         f"{nat['simulate_call_ratio']:.3f}",
                         f"{inj['median_ms']['hand']:.1f}", f"{inj['median_ms']['bbjax']:.1f}",
                         f"**{inj['ratio']:.3f}**",
                         " / ".join(f"{acc[k]:.4f}" for k in
                                    ("bbjax", "hand", "numpy_float32", "numpy_float64")),
                         f"`{command}`"])
    calls = cache["calls"]
    timing.write("simulate_cache", {"config": cfg.to_dict(), "rounds": rounds, **cache,
                                    "command": command},
                 [setting, f"{calls['first']['seconds']:.2f}",
                  f"{calls['first']['compile_seconds']:.2f}",
                  f"{calls['second']['seconds']:.3f}",
                  f"{calls['second']['compile_seconds']:.4f}",
                  f"**{cache['second_compile_share']:.2%}**", f"`{command}`"])
    print("wrote", path)


if __name__ == "__main__":
    main()
