"""Export a flax training step to ONNX, lower it back to JAX, and train through it.

The step (forward, cross-entropy, gradients, an Adam update) becomes one ONNX model with a
symbolic batch dimension. ``bbjax.onnx.lower`` turns it back into a pure JAX function that
takes and returns the same pytrees (nnx parameter state, optax state). We train the same
model twice — with the original step and with the lowered one — and compare.

    python examples/export_train_step.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.models import MLP, cross_entropy


def synthetic_data(key, n=2048):
    """A 10-class problem: labels from a random linear teacher."""
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (n, 64))
    y = jnp.argmax(x @ jax.random.normal(kw, (64, 10)), axis=-1).astype(jnp.int32)
    return np.asarray(x), np.asarray(y)


def main(steps: int = 200, batch: int = 128) -> None:
    model = MLP(64, 128, 10, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, x, y):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(x)
            return cross_entropy(logits, y)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    t0 = time.perf_counter()
    onnx_model = bbjax.onnx.export(
        train_step, params, opt_state,
        jax.ShapeDtypeStruct(("B", 64), jnp.float32), jax.ShapeDtypeStruct(("B",), jnp.int32))
    export_s = time.perf_counter() - t0
    ops = sorted({n.op_type for n in onnx_model.graph.node})
    print(f"exported in {export_s:.1f}s: {len(onnx_model.graph.node)} ONNX nodes, "
          f"{len(ops)} op types, batch dim {onnx_model.graph.input[-1].type.tensor_type.shape.dim[0].dim_param!r}")

    original = jax.jit(train_step)
    lowered = jax.jit(bbjax.onnx.lower(onnx_model))

    x, y = synthetic_data(jax.random.PRNGKey(1))
    state_a = state_b = (params, opt_state)
    times_a, times_b, max_diff = [], [], 0.0
    for step in range(steps):
        i = (step * batch) % (len(x) - batch)
        xb, yb = x[i:i + batch], y[i:i + batch]
        t = time.perf_counter()
        *state_a, loss_a = jax.block_until_ready(original(*state_a, xb, yb))
        times_a.append(time.perf_counter() - t)
        t = time.perf_counter()
        *state_b, loss_b = jax.block_until_ready(lowered(*state_b, xb, yb))
        times_b.append(time.perf_counter() - t)
        diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state_a[0], state_b[0])
        max_diff = max(max_diff, *jax.tree.leaves(diff))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss original {float(loss_a):.4f}  lowered {float(loss_b):.4f}")

    logits = nnx.merge(graphdef, state_b[0])(x)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y))
    med_a, med_b = np.median(times_a[5:]) * 1e3, np.median(times_b[5:]) * 1e3
    print(f"max |param difference| after {steps} steps: {max_diff:.2e}")
    print(f"train accuracy (lowered run): {accuracy:.3f}")
    print(f"median step time: original {med_a:.3f} ms, lowered {med_b:.3f} ms, "
          f"ratio {med_b / med_a:.3f}")


if __name__ == "__main__":
    main()
