"""The FedAvg client partition's step with its slots inlined vs with opaque slot calls.

One compiled ``FedAvgRound`` per mode (``Compiler()`` inlines, ``Compiler(inline=False)``
keeps the slot calls that run the Python components), the same components (a 784-256-10
MLP with SGD, ``padded_data_source`` batches of 64, 5 local steps), each client step jitted,
timed interleaved in one process (after a warm-up compile of each mode with other
component objects, so that neither mode's compile times include JAX's or the exporter's). Reports the ratio of median step times (inlined / opaque;
goal <= 1.02), the time each mode takes to compile (bbjax compile, JAX trace and lowering,
XLA compile) and the largest difference between the two modes' new states, and writes
benchmarks/results/inline_step_<platform>.json and a row in RESULTS.md.

    python benchmarks/inline_step.py [--reps 30] [--calls 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

import bbjax  # noqa: E402
from bbjax.compiler.inline import slot_status  # noqa: E402
from bbjax.models import MLP, cross_entropy  # noqa: E402
from bbjax.modules import FedAvgRound  # noqa: E402
from bbjax.compiler.step import PartitionStep  # noqa: E402

GOAL = 1.02


def client_step(inline: bool, model, source, local_steps: int):
    started = time.perf_counter()
    compiled = (bbjax.Compiler(inline=inline).bind("model", model).bind("data", source)
                .compile(FedAvgRound(local_steps)))
    step = PartitionStep(compiled, "fedavg_client")
    return step, compiled.find("fedavg_client"), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=640).astype(np.int32)
    model = bbjax.components.flax_model(MLP(784, 256, 10, rngs=nnx.Rngs(0)), optax.sgd(0.05),
                                        cross_entropy)
    source = bbjax.components.padded_data_source(x, y, 600, batch_size=64)
    states = {"model": model.init(jax.random.key(0)), "data": source.init(jax.random.key(1))}
    inputs = {"peers.server": np.array([0], np.int32)}
    inbox = {"global": [np.asarray(a) for a in jax.tree.leaves(states["model"].params)]}

    for inline in (True, False):  # warm up the exporter and JAX on other component objects
        client_step(inline, bbjax.components.flax_model(MLP(784, 256, 10, rngs=nnx.Rngs(1)),
                                                        optax.sgd(0.05), cross_entropy),
                    bbjax.components.padded_data_source(x, y, 600, batch_size=64), 1)
    steps, record = {}, {}
    for name, inline in (("inlined", True), ("opaque", False)):
        step, function, compile_s = client_step(inline, model, source, args.local_steps)
        started = time.perf_counter()
        lowered = jax.jit(step.__call__).lower(states, inputs, inbox)
        traced = time.perf_counter()
        executable = lowered.compile()
        built = time.perf_counter()
        result = jax.block_until_ready(executable(states, inputs, inbox))
        record[name] = {"bbjax_compile_s": round(compile_s, 2),
                        "trace_and_lower_s": round(traced - started, 2),
                        "xla_compile_s": round(built - traced, 2),
                        "partition_nodes": len(function.node),
                        "slots": slot_status(function) or "all opaque (inline=False)"}
        steps[name] = (executable, result)
    difference = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                     for a, b in zip(_leaves(steps["inlined"][1][0]),
                                     _leaves(steps["opaque"][1][0])))
    samples = timing.interleaved(
        {name: (lambda f=f: f(states, inputs, inbox)) for name, (f, _) in steps.items()},
        args.reps, args.calls)
    medians = {name: timing.median_ms(s) for name, s in samples.items()}
    ratio = medians["inlined"] / medians["opaque"]
    record.update({
        "workload": f"FedAvg client partition: MLP 784-256-10 (SGD), padded_data_source "
                    f"batch 64, {args.local_steps} local steps; one jitted step",
        "median_ms": {k: round(v, 3) for k, v in medians.items()},
        "ratio_inlined_over_opaque": round(ratio, 4), "goal": GOAL,
        "max_state_difference": difference, "reps": args.reps, "calls": args.calls})
    command = " ".join(["python"] + sys.argv)
    compile_s = {name: record[name]["bbjax_compile_s"] + record[name]["trace_and_lower_s"]
                 + record[name]["xla_compile_s"] for name in steps}
    path = timing.write("inline_step", {**record, "command": command},
                        [f"MLP 784-256-10, batch 64, {args.local_steps} local steps",
                         f"{medians['opaque']:.3f}", f"{medians['inlined']:.3f}",
                         f"**{ratio:.3f}**", f"{compile_s['opaque']:.1f}",
                         f"{compile_s['inlined']:.1f}", f"{difference:.1e}", f"`{command}`"])
    print(json.dumps(record, indent=2))
    print(f"inlined / opaque = {ratio:.3f} (goal <= {GOAL}); wrote {path}")

def _leaves(states):
    return [jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
            for x in jax.tree.leaves(states)]


if __name__ == "__main__":
    main()
