"""bbjax against Flower: wall time per FedAvg round of the same simulation.

Both run the ``FedAvgConfig`` experiment (FedProx Synthetic(1, 1) data, logistic regression
or MLP, ``clients_per_round`` of ``num_clients`` clients a round, ``local_steps`` SGD steps
of ``batch_size`` each, averaging weighted by example counts, no evaluation) from the same
initial parameters on the same client data:

* bbjax: the jitted round of ``bbjax.simulation.Simulation`` (the program ``simulate`` runs,
  states donated), warmed up, timed one round at a time; one block of
  rounds before the Flower run and one after.
* Flower: ``flower_fedavg_app.py`` in its own venv (``benchmarks/.flower-venv``, created from
  ``requirements-flower.txt`` when missing), Flower's simulation runtime on Ray with one
  client actor per core and local training jitted with JAX. Each round is timed inside the
  ServerApp's strategy (from one round's aggregation to the next), so Ray's startup does
  not count; the first round (actor start, compilation) is dropped. Flower's rounds take
  at least ~0.1 s: its simulation runtime polls for new messages and for replies every
  0.1 s (``vce_api.add_messages_to_queue``, ``InMemoryGrid.pull_interval``); the clients'
  own training time is reported separately.

Reports median seconds per round, the speed-up (Flower / bbjax), clients trained per second
and both models' test accuracy after ``--rounds`` rounds; writes
``benchmarks/results/against_flower_<platform>.json`` and a row in RESULTS.md.

    python benchmarks/against_flower.py [--rounds 20] [--bbjax-rounds 100] [--num-clients 100]
        [--clients-per-round 10] [--local-steps 20] [--model logreg|mlp] [--device cpu|gpu]
        [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402
from fedavg_workload import BbjaxRounds  # noqa: E402

from bbjax.data import FederatedData  # noqa: E402
from bbjax.experiments import Experiment, FedAvgConfig, build  # noqa: E402

HERE = Path(__file__).parent
FLOWER_VENV = HERE / ".flower-venv"
FLOWER_APP = HERE / "flower_fedavg_app.py"
FLOWER_REQUIREMENTS = HERE / "requirements-flower.txt"
QUICK = {"rounds": 4, "bbjax_rounds": 10, "num_clients": 20, "clients_per_round": 4,
         "local_steps": 5}


def flower_python() -> Path:
    """The Flower venv's interpreter; creates the venv first when it is missing."""
    python = FLOWER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {FLOWER_VENV} from {FLOWER_REQUIREMENTS.name}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                        str(FLOWER_REQUIREMENTS)], check=True)
    return python


def dense_layers(params: dict) -> list[np.ndarray]:
    """Kernel and bias of each dense layer, input first, of a server model (peer axis 0)."""
    names = [name for name in ("hidden", "out") if name in params]
    return [np.asarray(params[name][leaf])[0] for name in names for leaf in ("kernel", "bias")]


def accuracy(layers: list[np.ndarray], test: FederatedData) -> float:
    """Accuracy of the dense ReLU network ``layers`` on every client's test examples."""
    x = np.asarray(test.x).reshape(-1, test.x.shape[-1])
    for kernel, bias in list(zip(layers[::2], layers[1::2]))[:-1]:
        x = np.maximum(x @ kernel + bias, 0.0)
    logits = x @ layers[-2] + layers[-1]
    mask = np.asarray(test.mask).reshape(-1)
    hits = np.argmax(logits, -1) == np.asarray(test.y).reshape(-1)
    return float(hits[mask].mean())


def run_flower(python: Path, experiment: Experiment, initial: list[np.ndarray], rounds: int,
               cpus_per_client: float) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Flower's run of ``experiment`` from ``initial``: its JSON report and final layers."""
    config, train = experiment.config, experiment.train
    batch = min(config.batch_size, int(train.sizes.min()))  # as bbjax's build does
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.npz", Path(tmp) / "out.npz"
        np.savez(data, x=train.x, y=train.y, sizes=train.sizes,
                 **{f"param_{i}": p for i, p in enumerate(initial)})
        command = [str(python), str(FLOWER_APP), str(data), str(out),
                   "--rounds", str(rounds), "--clients-per-round", str(config.clients_per_round),
                   "--local-steps", str(config.local_steps), "--batch-size", str(batch),
                   "--learning-rate", str(config.learning_rate), "--seed", str(config.seed),
                   "--cpus-per-client", str(cpus_per_client)]
        done = subprocess.run(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-6000:])
            raise SystemExit(f"the Flower run failed (exit {done.returncode})")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(out) as final:
            layers = [final[f"arr_{i}"] for i in range(len(final.files))]
    return report, layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20,
                        help="Flower rounds (the first is dropped); accuracy is compared after "
                             "this many rounds")
    parser.add_argument("--bbjax-rounds", type=int, default=100,
                        help="bbjax rounds timed before and again after the Flower run")
    parser.add_argument("--num-clients", type=int, default=FedAvgConfig.num_clients)
    parser.add_argument("--clients-per-round", type=int, default=FedAvgConfig.clients_per_round)
    parser.add_argument("--local-steps", type=int, default=FedAvgConfig.local_steps)
    parser.add_argument("--model", choices=["logreg", "mlp"], default=FedAvgConfig.model)
    parser.add_argument("--flower-cpus-per-client", type=float, default=1.0,
                        help="Ray CPUs per Flower client actor (1: one actor per core)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="bbjax's device (Flower's clients run JAX on the CPU)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (the first Flower round is dropped)")
    jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
    python = flower_python()

    config = FedAvgConfig(num_clients=args.num_clients, clients_per_round=args.clients_per_round,
                          local_steps=args.local_steps, model=args.model, rounds=args.rounds)
    print(f"building {config}", flush=True)
    experiment = build(config)
    bbjax_rounds = BbjaxRounds(experiment, jax.random.PRNGKey(config.seed))
    bbjax_rounds.warm_up(3)
    initial = dense_layers(bbjax_rounds.states["server"]["model"].params)
    before = bbjax_rounds.timed(args.rounds)
    bbjax_accuracy = accuracy(dense_layers(bbjax_rounds.states["server"]["model"].params),
                              experiment.test)
    before += bbjax_rounds.timed(max(args.bbjax_rounds - args.rounds, 0))
    print(f"bbjax: {np.median(before):.4f} s/round over {len(before)} rounds; running Flower",
          flush=True)
    flower, flower_layers = run_flower(python, experiment, initial, args.rounds,
                                       args.flower_cpus_per_client)
    after = bbjax_rounds.timed(len(before))
    flower_accuracy = accuracy(flower_layers, experiment.test)

    bbjax_s = float(np.median(before + after))
    flower_s = float(np.median(flower["round_seconds"][1:]))
    client_s = float(np.median(flower["client_train_seconds"][1:]))
    speedup = flower_s / bbjax_s
    per_round = config.clients_per_round
    print(f"bbjax  {bbjax_s * 1e3:9.2f} ms/round ({per_round / bbjax_s:8.1f} clients/s; "
          f"medians before/after Flower {np.median(before) * 1e3:.2f}/"
          f"{np.median(after) * 1e3:.2f} ms), accuracy {bbjax_accuracy:.3f}")
    print(f"Flower {flower_s * 1e3:9.2f} ms/round ({per_round / flower_s:8.1f} clients/s; "
          f"clients' own training {client_s * 1e3:.2f} ms/round), accuracy {flower_accuracy:.3f}")
    print(f"speed-up (Flower / bbjax): {speedup:.1f}x")

    record = {
        "config": config.to_dict(), "device": args.device,
        "bbjax": {"median_s_per_round": bbjax_s, "clients_per_s": per_round / bbjax_s,
                  "median_s_before_flower": float(np.median(before)),
                  "median_s_after_flower": float(np.median(after)),
                  "accuracy_after_rounds": bbjax_accuracy, "seconds": before + after},
        "flower": {"median_s_per_round": flower_s, "clients_per_s": per_round / flower_s,
                   "median_client_train_s_per_round": client_s,
                   "accuracy_after_rounds": flower_accuracy,
                   **flower},
        "speedup": speedup, "command": " ".join(["python"] + sys.argv),
    }
    cells = [f"{args.model}, {config.num_clients} clients, {per_round}/round, "
             f"{config.local_steps} steps", f"{bbjax_s * 1e3:.2f}", f"{flower_s * 1e3:.1f}",
             f"**{speedup:.1f}**", f"{per_round / bbjax_s:.0f} / {per_round / flower_s:.0f}",
             f"{bbjax_accuracy:.3f} / {flower_accuracy:.3f}", f"`{record['command']}`"]
    print("wrote", timing.write("against_flower", record, cells))


if __name__ == "__main__":
    main()
