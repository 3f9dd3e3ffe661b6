"""How bbjax's simulated FedAvg round scales with the number of clients per round.

Every client runs every round (``Peers(cohort=None)``; population = clients per round):
10 to 100 000 clients for logistic regression and up to 10 000 for the MLP (64 hidden
units), on FedProx Synthetic(1, 1) with ``--features`` features and each client capped at
``--max-client-size`` examples (before the 80/20 train/test split; it bounds the padded
``[clients, rows, features]`` data that the states hold). Each configuration runs in a
fresh subprocess: it builds the experiment, compiles the jitted round
(``Simulation.round``, what ``bbjax.simulate`` scans, states donated) ahead of time, runs
it once, then times ``--rounds`` rounds after two warm-up rounds.

Reports the median time per round, clients per second, the compile time, the simulation
states' size and the round's memory from XLA's compiled memory analysis: temp (working
buffers), and ``working`` = temp / argument, the round's memory beyond its
inputs relative to the state it is given (the arguments are the states; the outputs, the
new states, alias the donated inputs). Also the process's peak RSS from the simulation's
start on CPU (the data it keeps included; its generation excluded), the device's
``peak_bytes_in_use`` on GPU. The children run with ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``
(what ``bbjax simulate`` sets: XLA's CPU default schedules for concurrency and keeps every
local step's batch alive at once); ``--xla-default-scheduler`` runs them without it.

Writes benchmarks/results/simulate_scaling_<platform>.json, one row per configuration in
RESULTS.md and benchmarks/simulate_scaling.png (log-log time per round, clients per second
and working memory; needs matplotlib: ``pip install bbjax[plot]``).

    python benchmarks/simulate_scaling.py [--device cpu|gpu] [--models logreg,mlp]
        [--max-clients 100000] [--features 60] [--max-client-size 100] [--local-steps 20]
        [--batch 10] [--rounds 5] [--source padded|rows] [--xla-default-scheduler] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402
from fedavg_workload import (SOURCES, BbjaxRounds, scaling_experiment,  # noqa: E402
                             with_rows_source)

CLIENTS = {"logreg": [10, 100, 1000, 10_000, 100_000], "mlp": [10, 100, 1000, 10_000]}
PLOT = Path(__file__).parent / "simulate_scaling.png"
RESULT_PREFIX = "RESULT "
MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--models", default="logreg,mlp", help="comma-separated: logreg, mlp")
    p.add_argument("--max-clients", type=int, default=100_000)
    p.add_argument("--features", type=int, default=60)
    p.add_argument("--max-client-size", type=int, default=100)
    p.add_argument("--local-steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration")
    p.add_argument("--source", choices=SOURCES, default="padded",
                   help="the clients' DataSource: bbjax's padded_data_source or uniform "
                        "random rows")
    p.add_argument("--xla-default-scheduler", action="store_true",
                   help=f"run the children without XLA_FLAGS={MEMORY_SCHEDULER}")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: up to 100 clients, 5 local steps, 3 timed rounds")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "CLIENTS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.max_clients, args.local_steps, args.rounds = min(args.max_clients, 100), 5, 3
    return args


def rss_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e3
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_one(args: argparse.Namespace, model: str, clients: int) -> dict:
    """Build, compile and time one configuration in this process."""
    started = time.perf_counter()
    exp = scaling_experiment(model, clients, args.features, args.max_client_size,
                             args.local_steps, args.batch)
    if args.source == "rows":
        exp = with_rows_source(exp)
    setup_s = time.perf_counter() - started
    gpu = args.device == "gpu"
    if not gpu:
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak RSS from here
    rounds = BbjaxRounds(exp, jax.random.PRNGKey(exp.config.seed))
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(rounds.states))
    started = time.perf_counter()
    memory = rounds.compile()
    first = jax.block_until_ready(rounds())
    compile_s = time.perf_counter() - started
    samples = timing.interleaved({"round": rounds}, args.rounds, 1)["round"]
    last = jax.block_until_ready(rounds())
    peak_mb = (jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 1e6 if gpu
               else rss_mb("VmHWM"))
    round_s = float(np.median(samples))
    analysis = {name: int(getattr(memory, f"{name}_size_in_bytes"))
                for name in ("argument", "output", "alias", "temp")}
    return {"model": model, "clients": clients, "round_s": round_s,
            "clients_per_s": clients / round_s, "compile_s": compile_s, "setup_s": setup_s,
            "state_mb": state_bytes / 1e6, "memory_analysis": analysis,
            "temp_mb": analysis["temp"] / 1e6,
            "working": analysis["temp"] / analysis["argument"],
            "peak_ratio": (analysis["argument"] + analysis["temp"] + analysis["output"]
                           - analysis["alias"]) / analysis["argument"],
            "peak_mb": peak_mb,
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
            "train_loss": [float(first["train_loss"]), float(last["train_loss"])],
            "train_rows": int(exp.train.x.shape[1]), "samples_s": samples}


def spawn(args: argparse.Namespace, model: str, clients: int) -> dict:
    """``run_one`` in a fresh Python process, so that peaks do not accumulate."""
    command = [sys.executable, __file__, "--child", model, str(clients),
               "--device", args.device, "--features", str(args.features),
               "--max-client-size", str(args.max_client_size),
               "--local-steps", str(args.local_steps), "--batch", str(args.batch),
               "--rounds", str(args.rounds), "--source", args.source]
    env = dict(os.environ)
    if not args.xla_default_scheduler:
        env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), MEMORY_SCHEDULER]))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{model} with {clients} clients failed (exit {done.returncode}):\n"
                         f"{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def plot(results: list[dict], title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing (pip install bbjax[plot])")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("round_s", "time per round (s)", "log"),
              ("clients_per_s", "clients per second", "log"),
              ("working", "temp / state", "linear"))
    for model in CLIENTS:
        rows = [r for r in results if r["model"] == model]
        if rows:
            n = [r["clients"] for r in rows]
            for ax, (key, _, _) in zip(axes, panels):
                ax.plot(n, [r[key] for r in rows], "o-", label=model)
    for ax, (_, label, yscale) in zip(axes, panels):
        ax.set(xscale="log", yscale=yscale, xlabel="clients per round", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)
    print("wrote", PLOT)


def main() -> None:
    args = parse()
    jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
    if args.child:
        model, clients = args.child
        print(RESULT_PREFIX + json.dumps(run_one(args, model, int(clients))), flush=True)
        return
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(CLIENTS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {sorted(CLIENTS)}")
    results = []
    for model in models:
        for clients in (n for n in CLIENTS[model] if n <= args.max_clients):
            r = spawn(args, model, clients)
            results.append(r)
            print(f"{model} {clients:>6} clients: {r['round_s'] * 1e3:10.1f} ms/round, "
                  f"{r['clients_per_s']:9.0f} clients/s, compile {r['compile_s']:.1f} s, "
                  f"state {r['state_mb']:.1f} MB, temp {r['temp_mb']:.1f} MB, working "
                  f"{r['working']:.2f}x state, peak RSS {r['peak_mb']:.0f} MB", flush=True)
    if not results:
        raise SystemExit(f"no configuration has at most --max-clients {args.max_clients}")
    setting = (f"K={args.local_steps}, B={args.batch}, {args.features} features, max client "
               f"size {args.max_client_size}, {args.source} source"
               + (", XLA default scheduler" if args.xla_default_scheduler else ""))
    command = " ".join(["python"] + sys.argv)
    record = {"local_steps": args.local_steps, "batch": args.batch, "features": args.features,
              "max_client_size": args.max_client_size, "source": args.source,
              "xla_default_scheduler": args.xla_default_scheduler, "rounds": args.rounds,
              "results": results, "command": command}
    for r in results:
        cells = [r["model"], str(r["clients"]), setting, f"{r['round_s'] * 1e3:.1f}",
                 f"{r['clients_per_s']:.0f}", f"{r['compile_s']:.1f}", f"{r['state_mb']:.1f}",
                 f"{r['temp_mb']:.1f}", f"**{r['working']:.2f}**", f"{r['peak_mb']:.0f}",
                 f"`{command}`"]
        path = timing.write("simulate_scaling", record, cells)
    print("wrote", path)
    plot(results, f"bbjax FedAvg round, every client runs; {setting}; {timing.machine()}")


if __name__ == "__main__":
    main()
