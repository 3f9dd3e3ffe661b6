"""bbjax's jax2onnx overrides are needed: without them the export is wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import bbjax
from bbjax.onnx import jax2onnx_overrides


def transposed_lhs_product(x, g):
    """``xᵀ·g``: the contraction every backward pass of a dense layer has."""
    return jax.lax.dot_general(x, g, (((0,), (0,)), ((), ())))


def _inputs(seed):
    r = np.random.default_rng(seed)
    return r.normal(size=(8, 5)).astype(np.float32), r.normal(size=(8, 3)).astype(np.float32)


def test_dot_general_override_exports_correct_gradient_contraction():
    x, g = _inputs(0)
    model = bbjax.onnx.export(transposed_lhs_product, x, g)
    x, g = _inputs(1)
    np.testing.assert_allclose(bbjax.onnx.lower(model)(x, g), x.T @ g, rtol=1e-5, atol=1e-6)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString())
    (out,) = session.run(None, dict(zip([i.name for i in session.get_inputs()], (x, g))))
    np.testing.assert_allclose(out, x.T @ g, rtol=1e-5, atol=1e-6)


def test_without_the_override_the_export_is_broken():
    x, g = _inputs(0)
    with jax2onnx_overrides.disabled("dot_general"):
        try:
            model = bbjax.onnx.export(transposed_lhs_product, x, g)
        except bbjax.errors.BbjaxError:
            return  # refused outright: broken, as expected
    ops = {n.op_type for n in model.graph.node}
    assert "Gemm" in ops  # the wrong Gemm without transA
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert not any(a.name == "transA" and a.i for a in gemm.attribute)
    ort = pytest.importorskip("onnxruntime")
    with pytest.raises(Exception):
        ort.InferenceSession(model.SerializeToString()).run(None, {})


def test_overrides_are_listed_and_restorable():
    assert "dot_general" in jax2onnx_overrides.OVERRIDES
    with pytest.raises(KeyError):
        with jax2onnx_overrides.disabled("nope"):
            pass


def test_an_export_loads_only_the_jax_and_flax_plugin_trees():
    """jax2onnx's equinox plugins compile example models when imported (~10 s a process):
    bbjax's export must not import them, nor jax2onnx's examples."""
    script = ("import sys, jax.numpy as jnp; from bbjax.onnx import export; "
              "export(lambda x: jnp.tanh(x) @ x.T, jnp.ones((2, 3))); "
              "print(sorted({m.split('.')[2] for m in sys.modules "
              "if m.startswith('jax2onnx.plugins.') and m.count('.') > 2}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['flax', 'jax']"
