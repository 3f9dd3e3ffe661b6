"""AllReduce data parallelism on 4 forced CPU host devices against 1 device.

JAX fixes the number of CPU devices when it starts, so the script runs its measurement in
a subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``. There the
same compiled ``AllReduceRound`` (R replicas of an MLP, SGD with momentum, a global batch
split over the replicas) runs through ``bbjax.simulate`` with ``devices=1`` (every replica
on device 0; the all-reduce is a sum over the vmapped axis) and ``devices=4`` (the replica
axis split over the mesh; the all-reduce is a cross-device collective), interleaved, each
call ``--rounds`` steps; time per step is the median of ``History.run_seconds / rounds``
(compiled once, then cache hits). It asserts that both give the same parameters and losses.
The 4 "devices" share this machine's cores, so this measures correctness and the cost of
the collective, not a speed-up. Writes benchmarks/results/data_parallel.json and a row
under ``## data_parallel`` in benchmarks/RESULTS.md.

    python benchmarks/data_parallel.py [--replicas 4] [--rounds 50] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DEVICES = 4


def measure(args: argparse.Namespace) -> dict:
    """The child: runs under 4 forced host devices and returns the record."""
    import jax
    import numpy as np
    import optax
    from flax import nnx

    import bbjax
    from bbjax.models import MLP, cross_entropy
    from bbjax.strategies.parallel import (
        AllReduceRound,
        all_reduce_mean,
        all_reduce_population,
        replica,
        shard_source,
    )

    assert jax.device_count() == DEVICES, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    y = rng.integers(0, 10, args.rows).astype(np.int32)
    bindings = {"model": replica(MLP(args.features, args.hidden, 10, rngs=nnx.Rngs(0)),
                                 optax.sgd(0.05, momentum=0.9), cross_entropy),
                "data": shard_source(x, y, args.replicas, args.batch),
                "all_reduce": all_reduce_mean()}
    compiler = bbjax.Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    compiled = compiler.compile(AllReduceRound())
    population = all_reduce_population(x, y, args.replicas, args.batch)

    def run(devices: int):
        return bbjax.simulate(compiled, population, args.rounds, jax.random.key(0),
                              bindings=bindings, devices=devices)

    histories = {d: run(d) for d in (1, DEVICES)}  # compile both
    samples: dict[int, list[float]] = {1: [], DEVICES: []}
    for rep in range(args.reps):
        for d in ((1, DEVICES) if rep % 2 == 0 else (DEVICES, 1)):
            history = run(d)
            samples[d].append(history.run_seconds / args.rounds)
            histories[d] = history
    one, many = histories[1], histories[DEVICES]
    leaves = zip(jax.tree.leaves(one.states["replica"]["model"].params),
                 jax.tree.leaves(many.states["replica"]["model"].params))
    difference = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in leaves)
    loss_difference = float(np.abs(one["train_loss"] - many["train_loss"]).max())
    assert difference < 1e-5 and loss_difference < 1e-5, (difference, loss_difference)
    kernel = many.states["replica"]["model"].params["out"]["kernel"]
    assert len({d.id for d in kernel.sharding.device_set}) == DEVICES
    ms = {d: float(np.median(s) * 1e3) for d, s in samples.items()}
    return {"config": vars(args), "ms_per_step": {"1_device": ms[1], "4_devices": ms[DEVICES]},
            "ratio_4_over_1": ms[DEVICES] / ms[1], "samples_s": {str(d): s for d, s in
                                                                 samples.items()},
            "max_param_difference": difference, "max_loss_difference": loss_difference,
            "final_loss": float(one["train_loss"][-1]), "first_loss": float(one["train_loss"][0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import timing

    if timing.answer_as_child(args, measure):
        return
    record = timing.measure_on_forced_devices(__file__, DEVICES, sys.argv[1:])

    write(record, timing)
    print(json.dumps(record["ms_per_step"]), f"ratio {record['ratio_4_over_1']:.2f}",
          f"max parameter difference {record['max_param_difference']:.2e}")


def write(record: dict, timing) -> None:
    """benchmarks/results/data_parallel.json and the RESULTS.md row."""
    import datetime as dt

    import jax

    config = record["config"]
    record = {"benchmark": "data_parallel", "date": dt.date.today().isoformat(),
              "machine": timing.machine(), "jax": jax.__version__,
              "command": "python benchmarks/data_parallel.py " + " ".join(sys.argv[1:]),
              **record}
    timing.RESULTS_DIR.mkdir(exist_ok=True)
    (timing.RESULTS_DIR / "data_parallel.json").write_text(json.dumps(record, indent=2) + "\n")
    shape = (f"{config['replicas']} replicas, MLP {config['features']}-{config['hidden']}-10, "
             f"batch {config['batch']}, {config['rounds']} steps")
    ms = record["ms_per_step"]
    cells = [record["date"], record["machine"], shape, f"{ms['1_device']:.2f}",
             f"{ms['4_devices']:.2f}", f"**{record['ratio_4_over_1']:.2f}**",
             f"{record['max_param_difference']:.1e}",
             f"{record['first_loss']:.3f} → {record['final_loss']:.3f}",
             f"`{record['command'].strip()}`"]
    row = "| " + " | ".join(cells) + " |\n"
    text = timing.RESULTS_MD.read_text()
    heading = "## data_parallel"
    if heading not in text:
        raise SystemExit(f"{timing.RESULTS_MD} has no section {heading!r}")
    head, rest = text.split(heading, 1)
    section, sep, tail = rest.partition("\n## ")
    timing.RESULTS_MD.write_text(head + heading + section.rstrip("\n") + "\n" + row
                                 + ("\n" + sep + tail if sep else ""))


if __name__ == "__main__":
    main()
