"""PBT over federated runs: a population of FedAdam simulations in one vmapped program
against the same members run one after another.

Members: ``bbjax.strategies.pbt.federated.federated_population`` — FedProx Synthetic(1, 1)
data over ``--clients`` clients (``--per-round`` a round), multinomial logistic regression
(60 → 10), ``--local-steps`` SGD steps of batch 10 a round at the member's client rate,
FedAdam at its server rate; a generation is ``--rounds`` rounds and the fitness (the
server model's negated held-out loss).

* bbjax: ``FederatedPopulation.train`` + ``evaluate`` for all members, one jitted call
  (the members' states stacked, ``Simulation.round`` vmapped over them).
* loop: the same generation of ONE member (the ``lax.scan`` of ``Simulation.round`` that
  ``bbjax.simulate`` runs, then the fitness), jitted and compiled once, called for each
  member in turn on its own states, as a host-side PBT runner over separate simulations
  would.

Populations of ``--members`` (default 8 and 32), both from the same initial members,
interleaved ``--reps`` times in one process (each sample ``--calls`` generations); the
first generation's results of both are checked to agree. Ratio = loop / bbjax median
seconds per generation; throughput in member-rounds/s. Writes
benchmarks/results/pbt_federated.json and prints the RESULTS.md rows.

    python benchmarks/pbt_federated.py [--members 8 32] [--reps 15] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import timing

from bbjax.strategies.config import Training
from bbjax.strategies.pbt import federated as fed

HERE = Path(__file__).parent
NAMES = ("client_learning_rate", "server_learning_rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="few reps (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.calls = 3, 1
    training = Training(max_client_size=200, local_steps=args.local_steps, batch_size=10)
    population = fed.federated_population(training, NAMES, num_clients=args.clients,
                                          clients_per_round=args.per_round,
                                          rounds=args.rounds)
    rows = [measure(population, n, args) for n in args.members]
    record = {"benchmark": "pbt_federated", "date": datetime.date.today().isoformat(),
              "machine": timing.machine(), "jax": jax.__version__,
              "command": " ".join(["python", *sys.argv]), "clients": args.clients,
              "per_round": args.per_round, "local_steps": args.local_steps,
              "rounds_per_generation": args.rounds, "reps": args.reps, "calls": args.calls,
              "rows": rows}
    out = HERE / "results" / "pbt_federated.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for row in rows:
        print(f"| {record['date']} | {record['machine']} | {row['members']} | {args.clients} "
              f"({args.per_round}/round) | {args.rounds} | {row['bbjax_ms_per_generation']:.1f}"
              f" | {row['loop_ms_per_generation']:.1f} | {row['bbjax_member_rounds_per_s']:.0f}"
              f" | {row['loop_member_rounds_per_s']:.0f} | **{row['ratio']:.2f}** | "
              f"`{record['command']}` |")
    print(f"wrote {out}")


def measure(population: fed.FederatedPopulation, n: int, args: argparse.Namespace) -> dict:
    """One population size: both programs compiled, checked to agree, timed interleaved."""
    rng = np.random.default_rng(0)
    values = {"client_learning_rate": rng.uniform(0.005, 0.05, n),
              "server_learning_rate": rng.uniform(0.005, 0.05, n)}
    start = jax.jit(population.init)(jax.random.PRNGKey(0), values, population.data)
    simulation, rounds = population.simulation, args.rounds
    inputs, tables = population.data[1], population.data[2]

    def vmapped(members):
        members, _ = population.train(members)
        return members, population.evaluate(members)[0]

    def one_member(states, run_key, first):
        def one(states, r):
            return simulation.round(states, jax.random.fold_in(run_key, r), inputs, r, tables)
        states, _ = jax.lax.scan(one, states, first + jnp.arange(rounds, dtype=jnp.int32))
        return states, population.score(states)["fitness"]

    compile_started = time.perf_counter()
    vmapped = jax.jit(vmapped).lower(start).compile()
    singles = [population.member(start, i) for i in range(n)]
    single = jax.jit(one_member).lower(singles[0], start.keys[0], start.next_round).compile()
    compile_seconds = time.perf_counter() - compile_started

    together, fitness = vmapped(start)
    alone = [single(singles[i], start.keys[i], start.next_round) for i in range(n)]
    np.testing.assert_allclose(np.asarray(fitness), [float(f) for _, f in alone], rtol=1e-4)
    for i in (0, n - 1):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     population.member(together, i), alone[i][0])

    def run_vmapped():
        return vmapped(start)[1]

    def run_loop():
        return [single(singles[i], start.keys[i], start.next_round)[1] for i in range(n)]

    samples = timing.interleaved({"bbjax": run_vmapped, "loop": run_loop}, args.reps,
                                 args.calls)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    return {"members": n, "compile_seconds": compile_seconds,
            "bbjax_ms_per_generation": medians["bbjax"] * 1e3,
            "loop_ms_per_generation": medians["loop"] * 1e3,
            "bbjax_member_rounds_per_s": n * rounds / medians["bbjax"],
            "loop_member_rounds_per_s": n * rounds / medians["loop"],
            "ratio": medians["loop"] / medians["bbjax"],
            "samples_ms": {k: [v * 1e3 for v in s] for k, s in samples.items()}}


if __name__ == "__main__":
    main()
