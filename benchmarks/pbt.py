"""Population-based training: a vmapped population against the same members trained one
after another, and PBT against random search with the same compute.

(a) Throughput. Members: a one-hidden-layer MLP (60 → ``--hidden`` → 10, ReLU) on the
pooled ``synthetic_iid`` rows of 10 clients, SGD at a searched learning rate on batches of
32, ``--steps`` steps a generation, fitness the negated held-out loss.
* bbjax: ``bbjax.strategies.pbt.run`` (the population vmapped: training and evaluation one
  compiled call a generation, exploit/explore another), time per generation =
  ``run_seconds / generations`` (compilation excluded).
* loop: the same members one after another in a Python loop, as a host-side PBT runner
  would; each generation trains every member, fetches the fitness values and runs
  Truncation(0.2) and Perturbation(0.2) in numpy on the host. Two variants, each compiled
  once and reused for every member and generation: "jitted step", the member's
  ``train_step`` and ``evaluate`` jitted (``steps + 1`` calls a member and generation), and
  "scanned", one jitted member generation (the same ``lax.scan`` of steps, then the
  evaluation: one call), a stronger baseline than the issue asks for.
Both at populations ``--sizes`` (default 8 and 32), interleaved ``--reps`` times in one
process; ratio = loop / bbjax median time per generation, throughput in member-steps/s.

(b) Search quality, same compute. Task where the schedule matters: regression of a fixed
random teacher MLP (20 → 32 → 1, tanh) plus label noise σ = 0.5 by a student MLP
(20 → 32 → 1) with SGD on batches of 4, so a constant rate trades speed for its noise
floor and a decaying rate beats it. ``--population`` members, learning rate uniform in
[0.001, 0.3]. Random search: every member trains ``generations × steps`` steps at its
fixed rate (``pbt.run`` with one generation of all the steps); PBT: ``generations``
generations of ``steps`` steps, Truncation(0.2) + Perturbation(0.2) (the issue's
configuration) and Ray Tune's preset (Truncation(0.25) + RayTune). Score: the best
member's held-out MSE at the end (lower is better), over ``--seeds`` seeds: mean ± std.

Writes benchmarks/results/pbt.json and prints its RESULTS.md rows (the section "Population-
based training" there holds them).

    python benchmarks/pbt.py [--quick] [--reps R] [--sizes 8 32] [--seeds S]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.strategies import pbt, workload
from bbjax.strategies.config import Training

HERE = Path(__file__).parent
EXPLOIT, EXPLORE = pbt.Truncation(0.2), pbt.Perturbation(0.2)


# --- (a) throughput --------------------------------------------------------------------------

def mlp_task(hidden: int) -> tuple[Any, Any, Any]:
    """``(init, train_step, evaluate)`` of the throughput members."""
    training = Training(dataset="synthetic_iid", max_client_size=200, seed=0)
    train, test = workload.peer_data(training, 10)
    x, y = (jnp.asarray(a) for a in workload.pooled_rows(train))
    tx, ty = (jnp.asarray(a) for a in workload.pooled_rows(test))
    features, classes = x.shape[1], int(y.max()) + 1

    def forward(p, xs):
        return jax.nn.relu(xs @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def loss(p, xs, ys):
        logits = forward(p, xs)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ys[:, None], 1))

    def init(key, h):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (features, hidden)) / math.sqrt(features),
                "b1": jnp.zeros(hidden),
                "w2": jax.random.normal(k2, (hidden, classes)) / math.sqrt(hidden),
                "b2": jnp.zeros(classes)}

    def train_step(p, h, key):
        idx = jax.random.randint(key, (32,), 0, x.shape[0])
        g = jax.grad(loss)(p, x[idx], y[idx])
        return jax.tree.map(lambda a, b: a - h["lr"] * b, p, g)

    def evaluate(p, h, key):
        return -loss(p, tx, ty)

    return init, train_step, evaluate


def loop_pbt(init, train_step, evaluate, n: int, generations: int, steps: int,
             key: jax.Array, per_step: bool) -> float:
    """The members one after another, exploit and explore on the host; each member's
    generation is one jitted call (a scan of its steps, then the evaluation), or with
    ``per_step`` one jitted call per step and one for the evaluation (the member's step
    jitted once, reused). Returns the seconds per generation (compilation excluded)."""
    jit_step, jit_eval = jax.jit(train_step), jax.jit(evaluate)

    @jax.jit
    def scanned(state, h, key):
        train_key, eval_key = jax.random.split(key)
        keys = jax.random.split(train_key, steps)
        state = jax.lax.scan(lambda s, k: (train_step(s, h, k), None), state, keys)[0]
        return state, evaluate(state, h, eval_key)

    def stepped(state, h, key):
        train_key, eval_key = jax.random.split(key)
        for k in jax.random.split(train_key, steps):
            state = jit_step(state, h, k)
        return state, jit_eval(state, h, eval_key)

    member_generation = stepped if per_step else scanned
    rng = np.random.default_rng(0)
    lrs = rng.uniform(0.01, 0.5, n).astype(np.float32)
    states = [init(k, {"lr": lrs[j]}) for j, k in enumerate(jax.random.split(key, n))]
    jax.block_until_ready(member_generation(states[0], {"lr": jnp.float32(lrs[0])}, key))
    started = time.perf_counter()
    cut = min(max(math.ceil(n * EXPLOIT.fraction), 1), n // 2)
    for g in range(generations):
        keys = jax.random.split(jax.random.fold_in(key, g), n)
        out = [member_generation(states[j], {"lr": jnp.float32(lrs[j])}, keys[j])
               for j in range(n)]
        states = [s for s, _ in out]
        fitness = np.array([float(f) for _, f in out])
        fitness[~np.isfinite(fitness)] = -np.inf
        order = sorted(range(n), key=lambda i: (-fitness[i], i))
        for i in range(cut):
            worst, best = order[n - 1 - i], order[i]
            states[worst], lrs[worst] = states[best], lrs[best]
        for slot in order[n - cut:]:
            lrs[slot] *= np.float32(1 + rng.uniform(-1, 1) * EXPLORE.factor)
    jax.block_until_ready(states)
    return (time.perf_counter() - started) / generations


def vmapped_pbt(init, train_step, evaluate, n: int, generations: int, steps: int,
                key: jax.Array) -> float:
    record = pbt.run(init, train_step, evaluate, pbt.SearchSpace({"lr": pbt.Float(0.01, 0.5)}),
                     key, population_size=n, generations=generations,
                     steps_per_generation=steps, exploit=EXPLOIT, explore=EXPLORE)
    return record.run_seconds / generations


def throughput(args: argparse.Namespace) -> list[dict]:
    task = mlp_task(args.hidden)
    rows = []
    for n in args.sizes:
        samples: dict[str, list[float]] = {"bbjax": [], "loop": [], "loop_steps": []}
        for rep in range(args.reps):
            key = jax.random.key(rep)
            g, k = args.generations, args.steps
            samples["bbjax"].append(vmapped_pbt(*task, n, g, k, key))
            samples["loop"].append(loop_pbt(*task, n, g, k, key, per_step=False))
            samples["loop_steps"].append(loop_pbt(*task, n, g, k, key, per_step=True))
        med = {k: statistics.median(v) for k, v in samples.items()}
        rows.append({"population": n, "steps_per_generation": args.steps,
                     "generations": args.generations,
                     "bbjax_ms_per_generation": 1e3 * med["bbjax"],
                     "loop_ms_per_generation": 1e3 * med["loop"],
                     "loop_steps_ms_per_generation": 1e3 * med["loop_steps"],
                     "ratio": med["loop"] / med["bbjax"],
                     "ratio_steps": med["loop_steps"] / med["bbjax"],
                     "bbjax_member_steps_per_s": n * args.steps / med["bbjax"],
                     "loop_member_steps_per_s": n * args.steps / med["loop"],
                     "loop_steps_member_steps_per_s": n * args.steps / med["loop_steps"],
                     "samples_ms": {k: [1e3 * t for t in v] for k, v in samples.items()}})
        print(f"(a) P={n}: bbjax {1e3 * med['bbjax']:.1f} ms/gen, loop (scanned member "
              f"generation) {1e3 * med['loop']:.1f}, ratio {med['loop'] / med['bbjax']:.2f}; "
              f"loop (jitted step) {1e3 * med['loop_steps']:.1f}, ratio "
              f"{med['loop_steps'] / med['bbjax']:.2f}", flush=True)
    return rows


# --- (b) PBT vs random search ----------------------------------------------------------------

def schedule_task(seed: int) -> tuple[Any, Any, Any]:
    """``(init, train_step, evaluate)`` of the teacher-student regression (fitness: the
    negated held-out MSE)."""
    k_teacher, k_x, k_noise, k_test = jax.random.split(jax.random.key(1000 + seed), 4)
    kt1, kt2 = jax.random.split(k_teacher)
    teacher = {"w1": jax.random.normal(kt1, (20, 32)) / math.sqrt(20),
               "w2": jax.random.normal(kt2, (32, 1)) * 2 / math.sqrt(32)}

    def net(p, xs):
        return (jnp.tanh(xs @ p["w1"]) @ p["w2"])[:, 0]

    x = jax.random.normal(k_x, (2000, 20))
    y = net(teacher, x) + 0.5 * jax.random.normal(k_noise, (2000,))
    tx = jax.random.normal(k_test, (1000, 20))
    ty = net(teacher, tx)

    def init(key, h):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (20, 32)) / math.sqrt(20),
                "w2": jax.random.normal(k2, (32, 1)) / math.sqrt(32)}

    def train_step(p, h, key):
        idx = jax.random.randint(key, (4,), 0, x.shape[0])
        g = jax.grad(lambda q: jnp.mean((net(q, x[idx]) - y[idx]) ** 2))(p)
        return jax.tree.map(lambda a, b: a - h["lr"] * b, p, g)

    def evaluate(p, h, key):
        return -jnp.mean((net(p, tx) - ty) ** 2)

    return init, train_step, evaluate


def search(args: argparse.Namespace) -> list[dict]:
    space = pbt.SearchSpace({"lr": pbt.Float(0.001, 0.3)})
    n, gens, steps = args.population, args.search_generations, args.search_steps
    runs = {"random search": (1, gens * steps, EXPLOIT, EXPLORE),
            "PBT Truncation(0.2) + Perturbation(0.2)": (gens, steps, EXPLOIT, EXPLORE),
            "PBT Ray Tune preset": (gens, steps, *pbt.ray_tune_preset())}
    scores: dict[str, list[float]] = {name: [] for name in runs}
    final_lr: dict[str, list[float]] = {name: [] for name in runs}
    for seed in range(args.seeds):
        task = schedule_task(seed)
        for name, (g, s, exploit, explore) in runs.items():
            record = pbt.run(*task, space, jax.random.key(seed), population_size=n,
                             generations=g, steps_per_generation=s, exploit=exploit,
                             explore=explore)
            scores[name].append(-float(record.metrics["best_fitness"][-1]))
            final_lr[name].append(float(record.metrics["best_lr"][-1]))
        print(f"(b) seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items()),
              flush=True)
    return [{"method": name, "population": n, "member_steps": gens * steps,
             "generations": runs[name][0], "mse_mean": statistics.mean(v),
             "mse_std": statistics.stdev(v) if len(v) > 1 else 0.0, "mse": v,
             "best_final_lr": final_lr[name]} for name, v in scores.items()]


# --- main ---------------------------------------------------------------------------------------

def machine() -> str:
    import os
    return (f"{platform.machine()} {os.cpu_count()} cores, "
            f"{jax.default_backend()}: {jax.devices()[0].device_kind}")


def markdown_rows(result: dict) -> str:
    """The RESULTS.md rows of ``result``: table (a), then table (b)."""
    rows_a = [
        f"| {result['date']} | {result['machine']} | {r['population']} | "
        f"MLP 60-{result['hidden']}-10, {r['steps_per_generation']} steps/gen, "
        f"{r['generations']} gens | {r['bbjax_ms_per_generation']:.1f} | "
        f"{r['loop_ms_per_generation']:.1f} | **{r['ratio']:.2f}** | "
        f"{r['loop_steps_ms_per_generation']:.1f} | **{r['ratio_steps']:.2f}** | "
        f"{r['bbjax_member_steps_per_s']:.0f} / {r['loop_member_steps_per_s']:.0f} / "
        f"{r['loop_steps_member_steps_per_s']:.0f} | "
        f"`{result['command']}` |" for r in result["throughput"]]
    rows_b = [
        f"| {result['date']} | {result['machine']} | {r['method']} | {r['population']} | "
        f"{r['member_steps']} | {r['mse_mean']:.4f} ± {r['mse_std']:.4f} | "
        f"{len(r['mse'])} | `{result['command']}` |" for r in result["search"]]
    return "\n".join(rows_a + [""] + rows_b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="interleaved samples per size")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="(a) steps per generation")
    p.add_argument("--generations", type=int, default=5, help="(a) generations per sample")
    p.add_argument("--population", type=int, default=16, help="(b) population")
    p.add_argument("--search-generations", type=int, default=20)
    p.add_argument("--search-steps", type=int, default=25)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = p.parse_args()
    if args.quick:
        args.reps, args.sizes, args.generations, args.seeds = 2, [4], 2, 2
        args.search_generations, args.search_steps, args.population = 3, 5, 4
    command = "python benchmarks/pbt.py" + ("" if len(sys.argv) < 2 else
                                            " " + " ".join(sys.argv[1:]))
    result = {"date": datetime.date.today().isoformat(), "machine": machine(),
              "hidden": args.hidden, "command": command,
              "throughput": throughput(args), "search": search(args)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "pbt.json").write_text(json.dumps(result, indent=1))
    print("wrote benchmarks/results/pbt.json; its RESULTS.md rows:")
    print(markdown_rows(result))


if __name__ == "__main__":
    main()
