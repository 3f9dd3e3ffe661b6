"""Component construction and call checks against the role contracts."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax.components import CONTRACTS, Component, Role, backend, contract

from bbjax.errors import ComponentError
from bbjax.errors import BbjaxError


def _init(key):
    return {"count": jnp.int32(0), "total": jnp.zeros(3)}


def _sample(state):
    return {**state, "count": state["count"] + 1}, state["total"]


def _view(state):
    return state, state["total"]


def _selector(**methods):
    base = {"sample": _sample, "current_view": _view}
    base.update(methods)
    return Component(Role.PEER_SELECTOR, _init, {k: v for k, v in base.items() if v}, "sel")


def _aggregator(aggregate):
    def contribute(state, peer, tensor, weight):
        return {**state, "total": state["total"] + weight * tensor}, ()

    return Component(Role.AGGREGATOR, _init, {"contribute": contribute, "aggregate": aggregate})


def test_every_role_has_a_contract():
    assert set(CONTRACTS) == set(Role)
    for role in Role:
        assert contract(role).role is role
    assert contract(Role.AGGREGATOR).spec("aggregate").signature == (
        "aggregate(state) -> (state, (result, total_weight))"
    )
    assert contract(Role.MODEL).spec("forward").signature == "forward(state, x) -> (state, y)"
    assert contract(Role.PROTOCOL).spec("on_timer").signature == (
        "on_timer(state, *inputs) -> (state, outputs)"
    )


def test_component_error_is_a_bbjax_error_and_names_its_parts():
    with pytest.raises(BbjaxError) as info:
        _selector(current_view=None)
    err = info.value
    assert isinstance(err, ComponentError)
    assert (err.component, err.role, err.method) == ("sel", "peer_selector", "current_view")
    assert str(err).startswith("component 'sel' (peer_selector), method 'current_view'")
    assert "current_view(state) -> (state, peers)" in str(err)


def test_role_may_be_given_by_value_and_name_defaults_to_it():
    c = Component("peer_selector", _init, {"sample": _sample, "current_view": _view})
    assert c.role is Role.PEER_SELECTOR and c.name == "peer_selector"
    assert "sample" in repr(c) and "peer_selector" in repr(c)


@pytest.mark.parametrize("role", ["trainer", 3, None])
def test_unknown_role(role):
    with pytest.raises(ComponentError, match="unknown role"):
        Component(role, _init, {"f": _sample}, "x")


def test_unknown_method_suggests_the_close_contract_name():
    with pytest.raises(ComponentError, match="did you mean 'sample'") as info:
        _selector(sampel=_sample)
    assert info.value.method == "sampel"
    assert "allowed: sample, current_view, select" in str(info.value)


def test_method_not_callable_and_init_not_callable():
    with pytest.raises(ComponentError, match="not callable") as info:
        _selector(select=3)
    assert info.value.method == "select"
    with pytest.raises(ComponentError, match="init is not callable"):
        Component(Role.PEER_SELECTOR, None, {"sample": _sample, "current_view": _view})
    with pytest.raises(ComponentError, match="must be a mapping"):
        Component(Role.PEER_SELECTOR, _init, [_sample, _view])


def test_methods_are_frozen_copies():
    methods = {"sample": _sample, "current_view": _view}
    c = Component(Role.PEER_SELECTOR, _init, methods)
    methods["select"] = _view
    assert "select" not in c.methods
    with pytest.raises(TypeError):
        c.methods["select"] = _view


def test_protocol_accepts_any_named_ops_but_not_none():
    p = Component(Role.PROTOCOL, _init, {"push": _sample, "pull": _view, "on_timer": _view})
    assert p.call("push", p.init(None))[0]["count"] == 1
    with pytest.raises(ComponentError, match="at least one method"):
        Component(Role.PROTOCOL, _init, {}, "gossip")
    with pytest.raises(ComponentError, match="identifiers"):
        Component(Role.PROTOCOL, _init, {"not a name": _sample})


def test_call_checks_the_method_exists_and_the_input_count():
    c = _selector()
    state = c.init(jax.random.key(0))
    with pytest.raises(ComponentError, match="no such method; this component has: sample"):
        c.call("select", state, 1)
    with pytest.raises(ComponentError, match=r"takes 0 input\(s\) after state, got 1") as info:
        c.call("sample", state, 1)
    assert info.value.method == "sample"


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda s: s, "must return a \\(state, outputs\\) pair, got dict"),
        (lambda s: ({"count": s["count"]}, 1), "changed the state's tree structure"),
        (
            lambda s: ({**s, "total": jnp.zeros(4)}, 1),
            r"changed state leaf \['total'\] from float32\[3\] to float32\[4\]",
        ),
        (
            lambda s: ({**s, "count": s["count"].astype(jnp.float32)}, 1),
            r"changed state leaf \['count'\] from int32\[\] to float32\[\]",
        ),
        (lambda s: ({**s, "count": "x"}, 1), r"state leaf \['count'\] is not an array"),
    ],
)
def test_call_checks_the_returned_state(bad, message):
    c = _selector(sample=bad)
    with pytest.raises(ComponentError, match=message) as info:
        c.call("sample", c.init(None))
    assert info.value.method == "sample"


def test_call_checks_the_output_arity():
    single = _aggregator(lambda s: (s, s["total"]))
    with pytest.raises(ComponentError, match=r"must return 2 output\(s\).*got ArrayImpl"):
        single.call("aggregate", single.init(None))
    triple = _aggregator(lambda s: (s, (1, 2, 3)))
    with pytest.raises(ComponentError, match="got a 3-tuple"):
        triple.call("aggregate", triple.init(None))

    def contribute_returning(state, peer, tensor, weight):
        return state, tensor

    methods = {"contribute": contribute_returning, "aggregate": lambda s: (s, (1, 2))}
    none = Component(Role.AGGREGATOR, _init, methods)
    with pytest.raises(ComponentError, match=r"must return 0 output\(s\)") as info:
        none.call("contribute", none.init(None), 0, jnp.ones(3), 1.0)
    assert info.value.method == "contribute"


def test_abstract_call_gives_shapes_without_computing():
    c = _aggregator(lambda s: (s, (s["total"], s["count"])))
    spec = jax.eval_shape(c.init, jax.random.key(0))
    state, _ = c.abstract_call("contribute", spec, 0, jax.ShapeDtypeStruct((3,), jnp.float32), 1.0)
    assert state == spec
    _, (result, weight) = c.abstract_call("aggregate", spec)
    assert result == jax.ShapeDtypeStruct((3,), jnp.float32)
    assert weight.shape == () and weight.dtype == jnp.int32
    bad = _aggregator(lambda s: (s, s["total"]))
    with pytest.raises(ComponentError, match="must return 2 output"):
        bad.abstract_call("aggregate", spec)


def test_call_runs_under_jit_and_vmap():
    c = _selector()
    sample = jax.jit(functools.partial(c.call, "sample"))
    state, out = sample(c.init(None))
    assert state["count"] == 1 and out.shape == (3,)
    states = jax.vmap(c.init)(jax.random.split(jax.random.key(0), 5))
    states, outs = jax.vmap(functools.partial(c.call, "sample"))(states)
    np.testing.assert_array_equal(states["count"], np.ones(5))
    assert outs.shape == (5, 3)


def _add(ctx, a, b):
    return a + b


def test_backend_normalizes_the_default_domain():
    b = backend({("ai.onnx", "Add"): _add, ("", "MatMul"): _add, ("com.example", "Fused"): _add})
    assert set(b.methods) == {("", "Add"), ("", "MatMul"), ("com.example", "Fused")}
    assert b.role is Role.BACKEND and b.init(None) == ()
    assert "ai.onnx::Add" in repr(b)


@pytest.mark.parametrize(
    "ops, message",
    [
        ({("", "Matmul"): _add}, "no ai.onnx op 'Matmul' to override .did you mean 'MatMul'"),
        ({"Add": _add}, "backend keys must be ONNX op keys"),
        ({("", ""): _add}, "backend keys must be ONNX op keys"),
        ({("", "Add"): 1}, "not callable"),
        ({("", "Add"): _add, ("ai.onnx", "Add"): _add}, "overridden twice"),
    ],
)
def test_backend_rejects_bad_overrides(ops, message):
    with pytest.raises(ComponentError, match=message) as info:
        backend(ops, name="kernels")
    assert info.value.component == "kernels" and info.value.role == "backend"


def test_backend_has_no_state_methods():
    b = backend({("", "Add"): _add})
    with pytest.raises(ComponentError, match="not state methods"):
        b.call("Add", (), 1, 2)


# -- config and fingerprint ----------------------------------------------------------------


def _protocol(init=_init, name="p", config=None, **methods):
    methods = methods or {"encode": _sample, "decode": _sample}
    return Component(Role.PROTOCOL, init, methods, name, config or {})


def test_config_is_a_read_only_json_copy():
    given = {"lr": 0.1, "schedule": {"steps": [1, 2]}}
    c = _protocol(config=given)
    given["lr"] = 0.5
    given["schedule"]["steps"].append(3)
    assert dict(c.config) == {"lr": 0.1, "schedule": {"steps": [1, 2]}}
    with pytest.raises(TypeError):
        c.config["lr"] = 0.2
    assert dict(_protocol().config) == {}


@pytest.mark.parametrize(
    "config, message",
    [
        ([("lr", 0.1)], "config must be a mapping, got list"),
        ({1: 0.1}, "config keys must be str, got 1"),
        ({"lr": np.float32(0.1)}, "config must hold JSON values"),
        ({"lr": float("nan")}, "config must hold JSON values"),
        ({"fn": _sample}, "config must hold JSON values"),
    ],
)
def test_config_must_be_json(config, message):
    with pytest.raises(ComponentError, match=message) as info:
        Component(Role.PROTOCOL, _init, {"push": _sample}, "p", config)
    assert info.value.component == "p"


def test_the_fingerprint_is_a_digest_of_what_the_component_is():
    c = _protocol(config={"lr": 0.1})
    assert len(c.fingerprint) == 64 and int(c.fingerprint, 16) >= 0
    assert set(c.fingerprint_parts) == {"role", "name", "state", "methods", "config"}
    assert c.fingerprint == _protocol(config={"lr": 0.1}).fingerprint  # built afresh
    assert c.abstract_state == {"count": jax.ShapeDtypeStruct((), jnp.int32),
                                "total": jax.ShapeDtypeStruct((3,), jnp.float32)}


@pytest.mark.parametrize(
    "other, part",
    [
        (Component(Role.CODEC, _init, {"encode": _sample, "decode": _sample}, "p",
                   {"lr": 0.1}), "role"),
        (_protocol(name="q", config={"lr": 0.1}), "name"),
        (_protocol(lambda key: {"count": jnp.int32(0), "total": jnp.zeros(4)},
                   config={"lr": 0.1}), "state"),
        (_protocol(lambda key: {"count": jnp.int32(0), "total": jnp.zeros(3, jnp.int32)},
                   config={"lr": 0.1}), "state"),
        (_protocol(lambda key: {"count": jnp.int32(0), "sum": jnp.zeros(3)},
                   config={"lr": 0.1}), "state"),
        (_protocol(lambda key: (jnp.int32(0), jnp.zeros(3)), config={"lr": 0.1}), "state"),
        (_protocol(config={"lr": 0.1}, encode=_sample, decode=_sample, pull=_sample),
         "methods"),
        (_protocol(config={"lr": 0.2}), "config"),
        (_protocol(config={"lr": 1}), "config"),
    ],
)
def test_each_part_changes_the_fingerprint(other, part):
    c = _protocol(config={"lr": 0.1})
    assert other.fingerprint != c.fingerprint
    assert [p for p in c.fingerprint_parts
            if c.fingerprint_parts[p] != other.fingerprint_parts[p]] == [part]


def test_the_fingerprint_traces_init_without_running_it():
    huge = _protocol(lambda key: {"w": jnp.zeros((1 << 20, 1 << 20))})  # 4 TiB if run
    assert huge.abstract_state["w"].shape == (1 << 20, 1 << 20)
    assert len(huge.fingerprint) == 64


def test_a_data_sources_example_count_is_left_out_of_its_fingerprint():
    def source(n, features=4):
        def init(key):
            return {"x": jnp.zeros((n, features)), "position": jnp.int32(0)}

        return Component(Role.DATA_SOURCE, init, {"next_batch": _sample}, "data")

    assert source(10).fingerprint == source(30).fingerprint
    assert source(10).fingerprint != source(10, features=5).fingerprint
