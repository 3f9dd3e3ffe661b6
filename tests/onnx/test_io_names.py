"""Exported graph inputs and outputs are named after the pytree paths of arguments and results."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest
from flax import linen, nnx

import bbjax
from bbjax.errors import ExportError

VALID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def io_names(model):
    return [i.name for i in model.graph.input], [o.name for o in model.graph.output]


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def step(params, batch):
    x, y = batch
    pred = x @ params["dense"]["kernel"] + params["dense"]["bias"]
    return {"loss": jnp.mean((pred - y) ** 2), "params": params}


def step_args():
    r = np.random.default_rng(0)
    params = {"dense": {"kernel": r.normal(size=(3, 2)).astype(np.float32),
                        "bias": r.normal(size=(2,)).astype(np.float32)}}
    batch = (r.normal(size=(4, 3)).astype(np.float32), r.normal(size=(4, 2)).astype(np.float32))
    return params, batch


@functools.cache
def step_model():
    return bbjax.onnx.export(step, *step_args())


def test_nested_dicts_and_tuples_name_inputs_and_outputs():
    assert io_names(step_model()) == (
        ["params.dense.bias", "params.dense.kernel", "batch.0", "batch.1"],
        ["out.loss", "out.params.dense.bias", "out.params.dense.kernel"])


def test_tuple_results_number_their_items():
    def split(x, y):
        return x + y, {"diff": x - y}

    model = bbjax.onnx.export(split, jnp.ones(2), jnp.ones(2))
    assert io_names(model) == (["x", "y"], ["out0", "out1.diff"])


def test_unnamed_positional_arguments_are_numbered():
    def total(first, *rest):
        return first + rest[0] + rest[1]["k"]

    model = bbjax.onnx.export(total, jnp.ones(2), jnp.ones(2), {"k": jnp.ones(2)})
    assert io_names(model) == (["first", "arg1", "arg2.k"], ["out"])


def test_partial_keeps_the_remaining_parameter_names():
    def scale(factor, values):
        return factor * values

    model = bbjax.onnx.export(functools.partial(scale, 2.0), jnp.ones(2))
    assert io_names(model)[0] == ["values"]


def test_flax_params_are_named_by_their_module_paths():
    dense = linen.Dense(2)
    variables = dense.init(jax.random.key(0), jnp.ones((1, 3)))
    model = bbjax.onnx.export(dense.apply, variables, jnp.ones((1, 3)))
    assert io_names(model)[0] == ["variables.params.bias", "variables.params.kernel", "arg1"]

    graphdef, state = nnx.split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    model = bbjax.onnx.export(forward, state, jnp.ones((1, 3)))
    assert io_names(model) == (["state.bias.value", "state.kernel.value", "x"], ["out"])


def test_keys_outside_identifier_characters_are_replaced():
    def f(p):
        return {"a/b": p["x y"] * 2}

    model = bbjax.onnx.export(f, {"x y": jnp.ones(2), "": jnp.ones(2), "é.1": jnp.ones(2)})
    inputs, outputs = io_names(model)
    assert inputs == ["p._", "p.x_y", "p.__1"]
    assert outputs == ["out.a_b"]


def test_colliding_names_get_numbered_suffixes():
    def f(out, p):
        return out + p["a b"] + p["a_b"]

    model = bbjax.onnx.export(f, jnp.ones(2), {"a b": jnp.ones(2), "a_b": jnp.ones(2)})
    assert io_names(model) == (["out", "p.a_b", "p.a_b_1"], ["out_1"])


def test_names_are_valid_unique_and_deterministic():
    again = bbjax.onnx.export(step, *step_args())
    inputs, outputs = io_names(step_model())
    names = inputs + outputs
    assert all(VALID.match(n) for n in names)
    assert len(set(names)) == len(names)
    assert io_names(again) == (inputs, outputs)


def test_passed_through_and_repeated_outputs_get_their_own_names():
    def f(x, y):
        return x, x, x * y

    x, y = np.arange(3, dtype=np.float32), np.full(3, 2.0, np.float32)
    model = bbjax.onnx.export(f, x, y)
    assert io_names(model) == (["x", "y"], ["out0", "out1", "out2"])
    got = session(model).run(["out0", "out1", "out2"], {"x": x, "y": y})
    for a, b in zip(got, f(x, y)):
        np.testing.assert_array_equal(a, b)


def test_an_internal_value_holding_a_wanted_name_is_moved_aside():
    def f(x):
        return jnp.tanh(x) * 2

    x = np.linspace(-1, 1, 5, dtype=np.float32)
    plain = bbjax.onnx.export(f, x)
    internal = plain.graph.node[0].output[0]
    assert internal not in io_names(plain)[0] + io_names(plain)[1]
    model = bbjax.onnx.export(f, x, input_names=[internal])
    assert io_names(model) == ([internal], ["out"])
    got, = session(model).run(["out"], {internal: x})
    np.testing.assert_allclose(got, f(x), rtol=1e-6)


def test_explicit_names_are_used_verbatim():
    model = bbjax.onnx.export(lambda a, b: a + b, jnp.ones(2), jnp.ones(2),
                              input_names=["peers.client", "state.model"],
                              output_names=["next_state.model"])
    assert io_names(model) == (["peers.client", "state.model"], ["next_state.model"])
    model = bbjax.onnx.export(lambda a, b: a + b, jnp.ones(2), jnp.ones(2), output_names=["a"])
    assert io_names(model) == (["a_1", "b"], ["a"])


@pytest.mark.parametrize("kwargs, match", [
    ({"input_names": ["only_one"]}, "1 input names"),
    ({"input_names": ["a", "a"]}, "distinct"),
    ({"input_names": ["a", "b"], "output_names": ["a"]}, "distinct"),
])
def test_bad_explicit_names_are_rejected(kwargs, match):
    with pytest.raises(ExportError, match=match):
        bbjax.onnx.export(lambda a, b: a + b, jnp.ones(2), jnp.ones(2), **kwargs)


def test_round_trip_is_unchanged():
    params, batch = step_args()
    got = jax.jit(bbjax.onnx.lower(step_model()))(params, batch)
    want = step(params, batch)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_onnxruntime_is_fed_and_read_by_name():
    params, (x, y) = step_args()
    feeds = {"batch.1": y, "batch.0": x, "params.dense.kernel": params["dense"]["kernel"],
             "params.dense.bias": params["dense"]["bias"]}
    loss, kernel = session(step_model()).run(["out.loss", "out.params.dense.kernel"], feeds)
    want = step(params, (x, y))
    np.testing.assert_allclose(loss, want["loss"], rtol=1e-6)
    np.testing.assert_array_equal(kernel, params["dense"]["kernel"])
