"""How bbjax's simulated FedAvg round scales with the number of clients per round.

Every client runs every round (``Peers(cohort=None)``; population = clients per round):
10 to 10 000 clients for the MLP 60-64-10 and up to 100 000 for logistic regression, on
FedProx Synthetic(1, 1) with each client capped at ``--max-client-size`` examples (default
100, before the 80/20 train/test split; it bounds the padded ``[clients, rows, 60]`` data
that the states hold). Each configuration runs in a fresh subprocess: it builds the
experiment, runs the jitted round (``Simulation.round``, what ``bbjax.simulate`` scans)
once to compile, then times ``--rounds`` rounds after two warm-up rounds.

Reports the median time per round, clients per second, the compile time (first round
included), the simulation states' size and the peak memory: on CPU the process's peak RSS
from the simulation's start (initial states, compilation, rounds; the data generation
before it excluded, the data it keeps included), on GPU the device's
``peak_bytes_in_use``. Writes benchmarks/results/simulate_scaling_<platform>.json, one row
per configuration in RESULTS.md and benchmarks/simulate_scaling.png (log-log time per
round and clients per second; needs matplotlib: ``pip install bbjax[plot]``).

    python benchmarks/simulate_scaling.py [--device cpu|gpu] [--max-clients 100000]
        [--max-client-size 100] [--local-steps 20] [--batch 10] [--rounds 5]
        [--source padded|rows] [--quick]
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
from fedavg_workload import SOURCES, BbjaxRounds, experiment, fedavg_config  # noqa: E402

CLIENTS = {"mlp": [10, 100, 1000, 10_000], "logreg": [10, 100, 1000, 10_000, 100_000]}
PLOT = Path(__file__).parent / "simulate_scaling.png"
RESULT_PREFIX = "RESULT "


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--max-clients", type=int, default=100_000)
    p.add_argument("--max-client-size", type=int, default=100)
    p.add_argument("--local-steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration")
    p.add_argument("--source", choices=SOURCES, default="padded",
                   help="the clients' DataSource: bbjax's padded_data_source (as built by "
                        "bbjax.simulation.experiment) or uniform random rows")
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
    cfg = fedavg_config(model, num_clients=clients, clients_per_round=clients,
                        max_client_size=args.max_client_size, local_steps=args.local_steps,
                        batch_size=args.batch)
    exp = experiment(cfg, full=True, source=args.source)
    setup_s = time.perf_counter() - started
    gpu = args.device == "gpu"
    if not gpu:
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak RSS from here
    rounds = BbjaxRounds(exp, jax.random.PRNGKey(cfg.seed))
    state_mb = sum(leaf.nbytes for leaf in jax.tree.leaves(rounds.states)) / 1e6
    started = time.perf_counter()
    first = jax.block_until_ready(rounds())
    compile_s = time.perf_counter() - started
    samples = timing.interleaved({"round": rounds}, args.rounds, 1)["round"]
    last = jax.block_until_ready(rounds())
    peak_mb = (jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 1e6 if gpu
               else rss_mb("VmHWM"))
    round_s = float(np.median(samples))
    return {"model": model, "clients": clients, "round_s": round_s,
            "clients_per_s": clients / round_s, "compile_s": compile_s, "setup_s": setup_s,
            "state_mb": state_mb, "peak_mb": peak_mb,
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
            "train_loss": [float(first["train_loss"]), float(last["train_loss"])],
            "train_rows": int(exp.train.x.shape[1]), "samples_s": samples}


def spawn(args: argparse.Namespace, model: str, clients: int) -> dict:
    """``run_one`` in a fresh Python process, so that peaks do not accumulate."""
    command = [sys.executable, __file__, "--child", model, str(clients),
               "--device", args.device, "--max-client-size", str(args.max_client_size),
               "--local-steps", str(args.local_steps), "--batch", str(args.batch),
               "--rounds", str(args.rounds), "--source", args.source]
    done = subprocess.run(command, capture_output=True, text=True)
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

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in CLIENTS:
        rows = [r for r in results if r["model"] == model]
        if rows:
            n = [r["clients"] for r in rows]
            left.plot(n, [r["round_s"] for r in rows], "o-", label=model)
            right.plot(n, [r["clients_per_s"] for r in rows], "o-", label=model)
    for ax, label in ((left, "time per round (s)"), (right, "clients per second")):
        ax.set(xscale="log", yscale="log", xlabel="clients per round", ylabel=label)
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
    results = []
    for model, sizes in CLIENTS.items():
        for clients in (n for n in sizes if n <= args.max_clients):
            r = spawn(args, model, clients)
            results.append(r)
            print(f"{model} {clients:>6} clients: {r['round_s'] * 1e3:10.1f} ms/round, "
                  f"{r['clients_per_s']:9.0f} clients/s, compile {r['compile_s']:.1f} s, "
                  f"state {r['state_mb']:.0f} MB, peak {r['peak_mb']:.0f} MB", flush=True)
    if not results:
        raise SystemExit(f"no configuration has at most --max-clients {args.max_clients}")
    setting = (f"K={args.local_steps}, B={args.batch}, max client size {args.max_client_size}, "
               f"{args.source} source")
    command = " ".join(["python"] + sys.argv)
    record = {"local_steps": args.local_steps, "batch": args.batch,
              "max_client_size": args.max_client_size, "source": args.source,
              "rounds": args.rounds, "results": results, "command": command}
    for r in results:
        cells = [r["model"], str(r["clients"]), setting, f"{r['round_s'] * 1e3:.1f}",
                 f"{r['clients_per_s']:.0f}", f"{r['compile_s']:.1f}", f"{r['state_mb']:.1f}",
                 f"{r['peak_mb']:.0f}", f"`{command}`"]
        path = timing.write("simulate_scaling", record, cells)
    print("wrote", path)
    plot(results, f"bbjax FedAvg round, every client runs; {setting}; {timing.machine()}")


if __name__ == "__main__":
    main()
