"""Lowered training step vs the original, both jitted, same process, interleaved.

Workloads: a 784-512-512-10 MLP with Adam and `bbjax.models.CNN` (28x28x1, conv 32, conv 64) with
Adam, batch 128. Reports the ratio of median step times (lowered / original; goal <= 1.05),
writes benchmarks/results/roundtrip_train_step_<platform>.json and a row in RESULTS.md.

    python benchmarks/roundtrip_train_step.py [--device cpu|gpu] [--reps 30] [--calls 10]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

import bbjax  # noqa: E402
from bbjax.models import CNN, cross_entropy  # noqa: E402


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(784, 512, rngs=rngs)
        self.l2 = nnx.Linear(512, 512, rngs=rngs)
        self.l3 = nnx.Linear(512, 10, rngs=rngs)

    def __call__(self, x):
        return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))


def _adam_step(module: nnx.Module):
    """An Adam training step ``(params, opt_state, x, y) -> (params, opt_state, loss)`` of
    ``module`` under cross-entropy, its parameters and Adam's initial state."""
    graphdef, params = nnx.split(module, nnx.Param)
    opt = optax.adam(1e-3)

    def step(params, opt_state, x, y):
        l, g = jax.value_and_grad(lambda p: cross_entropy(nnx.merge(graphdef, p)(x), y))(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, l

    return step, params, opt.init(params)


def mlp_workload(batch: int):
    step, params, opt_state = _adam_step(MLP(nnx.Rngs(0)))
    r = np.random.default_rng(0)
    x = r.normal(size=(batch, 784)).astype(np.float32)
    y = r.integers(0, 10, batch).astype(np.int32)
    return step, (params, opt_state, x, y)


def cnn_workload(batch: int):
    step, params, opt_state = _adam_step(CNN((28, 28, 1), 10, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).normal(size=(batch, 28, 28, 1)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, batch).astype(np.int32)
    return step, (params, opt_state, x, y)


def measure(name, step, args, reps, calls):
    original = jax.jit(step)
    lowered = jax.jit(bbjax.onnx.lower(bbjax.onnx.export(step, *args)))
    args = jax.device_put(args)
    out_o, out_l = original(*args), lowered(*args)
    max_diff = max(float(jnp.max(jnp.abs(a - b)))
                   for a, b in zip(jax.tree.leaves(out_o), jax.tree.leaves(out_l)))
    samples = timing.interleaved({"original": lambda: original(*args),
                                  "lowered": lambda: lowered(*args)}, reps, calls)
    med_o, med_l = timing.median_ms(samples["original"]), timing.median_ms(samples["lowered"])
    print(f"{name}: original {med_o:.3f} ms, lowered {med_l:.3f} ms, "
          f"ratio {med_l / med_o:.3f}, max |output difference| {max_diff:.1e}")
    return {"original_ms": med_o, "lowered_ms": med_l, "ratio": med_l / med_o,
            "max_abs_diff": max_diff, "samples_ms": {k: [v * 1e3 for v in vs]
                                                      for k, vs in samples.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
    results = {
        "mlp_784_512_512_10_adam": measure("MLP 784-512-512-10 Adam", *mlp_workload(args.batch),
                                           args.reps, args.calls),
        "cnn_adam": measure("CNN Adam", *cnn_workload(args.batch), args.reps, args.calls),
    }
    record = {"batch": args.batch, "reps": args.reps, "calls_per_rep": args.calls,
              "results": results, "command": " ".join(["python"] + sys.argv)}
    mlp, cnn = results["mlp_784_512_512_10_adam"], results["cnn_adam"]
    cells = [f"{mlp['original_ms']:.3f} / {mlp['lowered_ms']:.3f}", f"**{mlp['ratio']:.3f}**",
             f"{cnn['original_ms']:.3f} / {cnn['lowered_ms']:.3f}", f"**{cnn['ratio']:.3f}**",
             f"`{record['command']}`"]
    print("wrote", timing.write("roundtrip_train_step", record, cells))


if __name__ == "__main__":
    main()
