"""The pipeline bubble of ``bbjax.strategies.pipeline`` on P forced CPU host devices,
measured against the theory ``(P - 1) / (M + P - 1)``.

JAX fixes the number of CPU devices when it starts, so the measurement runs in a
subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``. There, for
each P and M, a P-stage MLP (every stage a ``width x width`` tanh layer, the last one also a
10-class head and the cross-entropy; micro-batches of ``--rows`` rows, so every tick costs
the same whatever M) is stepped by two programs built from the same ``Pipeline`` code:

- ``pipeline``: the real schedule, ``2 (M + P - 1)`` ticks (GPipe, or 1F1B).
- ``busy``: the same executor with the schedule replaced by a bubble-free one: ``M``
  forward ticks then ``M`` backward ticks, every stage on a real micro-batch in every
  tick. It ignores the data dependencies (its numbers are wrong); it is run only for its
  cost, which is exactly the useful work of the pipeline: each device's M forwards and M
  backwards, the same switch branches, ppermutes, buffers and optimizer update.

In the SPMD program every device computes in every tick (an idle stage computes a masked
dummy) and the ppermute at the end of a tick waits for the neighbours, so a device's time
is the pipeline's time, and the part of it not spent on real micro-batches is the idle
fraction of stage-time: ``bubble = 1 - T_busy / T_pipeline``. With 4 devices on 2 cores the
devices share the cores, which makes every tick slower but the same for both programs, so
the ratio still measures the bubble. The fixed cost of a step (the optimizer update, the
loss reduction, the dispatch) is in both programs and biases that ratio low, so each
program also runs with its schedule repeated twice in one step (two flushes), and the
marginal bubble ``1 - (T_busy_x2 - T_busy) / (T_pipeline_x2 - T_pipeline)`` compares the
second flushes' costs, in which the fixed cost cancels (at the price of more noise). Also timed: the jitted non-pipelined step of the whole model on one device (context,
not a speed-up: the devices share this machine's cores). For GPipe and 1F1B, XLA's
``memory_analysis()`` of the compiled step gives the temporary bytes, and ``slots`` the
micro-batches whose activations a stage holds at once.

Interleaved repetitions, medians. Writes benchmarks/results/pipeline_bubble.json and a row
per (schedule, P) under ``## pipeline_bubble`` in benchmarks/RESULTS.md.

    python benchmarks/pipeline_bubble.py [--width 384] [--rows 64] [--reps 31] [--calls 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DEVICES = 4


def measure(args: argparse.Namespace) -> dict:
    """The child: runs under 4 forced host devices and returns the record."""
    from functools import partial
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as Spec

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import timing

    from bbjax.strategies.pipeline import Schedule, pipeline
    from bbjax.strategies.pipeline.schedule import BACKWARD, FORWARD

    assert jax.device_count() == DEVICES, jax.devices()
    rng = np.random.default_rng(0)

    def layer(n_in: int, n_out: int) -> dict:
        return {"w": jnp.asarray(rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), jnp.float32),
                "b": jnp.zeros(n_out, jnp.float32)}

    def hidden(p, x):
        return jnp.tanh(x @ p["w"] + p["b"])

    def last(p, x):
        return hidden(p["hidden"], x) @ p["head"]["w"] + p["head"]["b"]

    def loss(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def stages(p: int) -> SimpleNamespace:
        params = [layer(args.width, args.width) for _ in range(p - 1)]
        params.append({"hidden": layer(args.width, args.width), "head": layer(args.width, 10)})
        return SimpleNamespace(applies=(hidden,) * (p - 1) + (last,), params=tuple(params))

    def busy(p: int, m: int) -> Schedule:
        ticks = np.arange(m)[:, None].repeat(p, 1)
        op = np.concatenate([np.full((m, p), FORWARD), np.full((m, p), BACKWARD)])
        return Schedule("busy", op.astype(np.int32),
                        np.concatenate([ticks, m - 1 - ticks]).astype(np.int32), m)

    def twice(schedule: Schedule) -> Schedule:
        """Two flushes of ``schedule`` back to back (every micro-batch run twice, so the
        gradients double: for the cost only)."""
        return Schedule(schedule.name + "x2", np.tile(schedule.op, (2, 1)),
                        np.tile(schedule.micro_batch, (2, 1)), schedule.slots)

    def single_step(model, optimizer):
        def objective(params, x, y):
            out = x
            for apply, q in zip(model.applies, params):
                out = apply(q, out)
            return loss(out, y)

        @jax.jit
        def step(params, opt_state, x, y):
            value, grads = jax.value_and_grad(objective)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value
        return step

    optimizer = optax.sgd(0.01)
    runs = []
    grid = [("gpipe", 4, m) for m in range(1, 17)] + [("gpipe", 2, m) for m in (1, 2, 4, 8, 16)]
    grid += [("1f1b", 4, m) for m in (1, 2, 4, 8, 16)]
    for schedule, p, m in grid:
        model = stages(p)
        x = jnp.asarray(rng.normal(size=(m * args.rows, args.width)), jnp.float32)
        y = jnp.asarray(rng.integers(0, 10, m * args.rows), jnp.int32)
        real = pipeline(model, loss, optimizer, batch=(x, y), micro_batches=m,
                        schedule=schedule, devices=p)
        # the same executor on other schedules, set before the first trace (cost only)
        useful, real2, useful2 = (pipeline(model, loss, optimizer, batch=(x, y),
                                           micro_batches=m, devices=p) for _ in range(3))
        useful.schedule = busy(p, m)
        real2.schedule, useful2.schedule = twice(real.schedule), twice(useful.schedule)
        state = real.init()
        one = jax.devices()[0]
        params = jax.device_put(tuple(model.params), one)
        opt_state = jax.device_put(optimizer.init(params), one)
        xs, ys = jax.device_put(x, one), jax.device_put(y, one)
        step = single_step(model, optimizer)
        replicated = NamedSharding(real.mesh, Spec())  # the batch on every device already
        xr, yr = jax.device_put(x, replicated), jax.device_put(y, replicated)
        wall, cpu = paired({
            "pipeline": partial(real.step, state, xr, yr),
            "busy": partial(useful.step, state, xr, yr),
            "pipeline_x2": partial(real2.step, state, xr, yr),
            "busy_x2": partial(useful2.step, state, xr, yr),
            "single": partial(step, params, opt_state, xs, ys),
        }, reps=args.reps, calls=args.calls)
        ms = {name: timing.median_ms(values) for name, values in wall.items()}
        memory = real.step.lower(state, x, y).compile().memory_analysis()
        theory = (p - 1) / (m + p - 1)
        measured = 1 - ms["busy"] / ms["pipeline"]
        measured_cpu = 1 - np.median(cpu["busy"]) / np.median(cpu["pipeline"])
        runs.append({"schedule": schedule, "stages": p, "micro_batches": m,
                     "ticks": real.schedule.ticks, "slots": real.schedule.slots,
                     "theory": theory, "measured": measured, "measured_cpu": measured_cpu,
                     "measured_paired": float(np.median(1 - np.array(wall["busy"])
                                                        / np.array(wall["pipeline"]))),
                     "measured_min": 1 - min(wall["busy"]) / min(wall["pipeline"]),
                     # the second flush's cost: a step's fixed cost cancels out
                     "measured_marginal": 1 - (ms["busy_x2"] - ms["busy"])
                     / (ms["pipeline_x2"] - ms["pipeline"]),
                     "relative_error": (measured - theory) / theory,
                     "ms": ms, "pipeline_over_single": float(np.median(
                         np.array(wall["pipeline"]) / np.array(wall["single"]))),
                     "temp_bytes": int(memory.temp_size_in_bytes),
                     "wall_s": wall, "cpu_s": cpu})
        runs[-1]["relative_error_marginal"] = (runs[-1]["measured_marginal"] - theory) / theory
        print(f"{schedule} P={p} M={m:2d} bubble {measured:.3f} (marginal "
              f"{runs[-1]['measured_marginal']:.3f}, cpu {measured_cpu:.3f}, "
              f"paired {runs[-1]['measured_paired']:.3f}, min {runs[-1]['measured_min']:.3f}) "
              f"theory {theory:.3f} "
              f"pipeline {ms['pipeline']:.2f} ms busy {ms['busy']:.2f} ms single "
              f"{ms['single']:.2f} ms temp {memory.temp_size_in_bytes / 1e6:.2f} MB",
              file=sys.stderr, flush=True)
    return {"config": vars(args), "runs": runs}


def paired(fns: dict, reps: int, calls: int) -> tuple[dict, dict]:
    """Wall-clock and process CPU seconds per call of each function, ``reps`` samples of
    ``calls`` calls each, the functions taking turns (the order reversed every other rep),
    so sample ``r`` of every function was taken under the same load."""
    import time

    import jax

    for fn in fns.values():  # compile and warm up
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                out = fns[name]()
            jax.block_until_ready(out)
            wall[name].append((time.perf_counter() - start) / calls)
            cpu[name].append((time.process_time() - start_cpu) / calls)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--reps", type=int, default=31)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import timing

    if timing.answer_as_child(args, measure):
        return
    record = timing.measure_on_forced_devices(__file__, DEVICES, sys.argv[1:])

    write(record, timing)


def write(record: dict, timing) -> None:
    """benchmarks/results/pipeline_bubble.json and one RESULTS.md row per (schedule, P)."""
    import datetime as dt

    import jax

    config = record["config"]
    record = {"benchmark": "pipeline_bubble", "date": dt.date.today().isoformat(),
              "machine": timing.machine() + " (4 forced host devices)", "jax": jax.__version__,
              "command": " ".join(["python benchmarks/pipeline_bubble.py", *sys.argv[1:]]),
              **record}
    timing.RESULTS_DIR.mkdir(exist_ok=True)
    (timing.RESULTS_DIR / "pipeline_bubble.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = []
    for schedule, p in sorted({(r["schedule"], r["stages"]) for r in record["runs"]},
                              key=lambda k: (k[0] != "gpipe", -k[1])):
        runs = {r["micro_batches"]: r for r in record["runs"]
                if (r["schedule"], r["stages"]) == (schedule, p)}
        worst = max(abs(r["relative_error"]) for r in runs.values())
        worst_marginal = max(abs(r["relative_error_marginal"]) for r in runs.values())
        top = max(runs)
        cells = [record["date"], record["machine"], schedule, str(p),
                 (f"MLP {config['width']}², {config['rows']} rows per micro-batch, "
                  f"{config['reps']} reps"),
                 *[(f"{runs[m]['measured']:.3f} ({runs[m]['measured_marginal']:.3f}) / "
                    f"{runs[m]['theory']:.3f}") if m in runs else "–" for m in (1, 2, 4, 8, 16)],
                 f"**{worst:.0%}** ({worst_marginal:.0%}) over {len(runs)} M",
                 f"{runs[top]['pipeline_over_single']:.2f}",
                 f"{runs[top]['temp_bytes'] / 1e6:.2f}", f"`{record['command']}`"]
        rows.append("| " + " | ".join(cells) + " |\n")
    text = timing.RESULTS_MD.read_text()
    heading = "## pipeline_bubble"
    if heading not in text:
        raise SystemExit(f"{timing.RESULTS_MD} has no section {heading!r}")
    head, rest = text.split(heading, 1)
    section, sep, tail = rest.partition("\n## ")
    timing.RESULTS_MD.write_text(head + heading + section.rstrip("\n") + "\n" + "".join(rows)
                                 + ("\n" + sep + tail if sep else ""))


if __name__ == "__main__":
    main()
