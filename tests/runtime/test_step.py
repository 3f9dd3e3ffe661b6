"""Compiled partitions run as pure steps and reproduce the components' own computation."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from bbjax.compiler import Compiler
from bbjax.errors import BbjaxError
from bbjax.compiler.step import PartitionStep
from bbjax.errors import StepError
from tests.dsl.test_module import Round, data_source, model  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def steps(model):  # noqa: F811
    bindings = {"model": model, "data": data_source()}
    compiled = Compiler().bind("model", model).bind("data", bindings["data"]).compile(Round())
    return bindings, {name: PartitionStep(compiled, name, bindings)
                      for name in ("round", "round_client", "round_server")}


def _direct_client(bindings, server_params, key):
    """What the client partition does, written directly with the components."""
    model, data = bindings["model"], bindings["data"]
    data_key, model_key = jax.random.split(key, 2)  # slots in sorted order: data, model
    state, data_state = model.init(model_key), data.init(data_key)
    state, _ = model.call("load_parameters", state, server_params)
    data_state, (x, y) = data.call("next_batch", data_state)
    state, _ = model.call("train", state, x, y)
    return jax.tree.leaves(model.call("params", state)[1])


def test_partitions_chained_by_hand_match_direct_calls(steps):
    bindings, step = steps
    key = jax.random.PRNGKey(3)
    server_states, _, outbox = jax.jit(step["round"].__call__)(
        step["round"].init(key), {"peers.client": np.arange(4, dtype=np.int32)}, {})
    payload, peers = outbox["global"]
    np.testing.assert_array_equal(peers, np.arange(4))
    _, _, client_box = jax.jit(step["round_client"].__call__)(
        step["round_client"].init(key), {"peers.server": np.zeros(1, np.int32)},
        {"global": payload})
    server_params = bindings["model"].call("params", server_states["model"])[1]
    chex.assert_trees_all_equal(client_box["update"][0],
                                _direct_client(bindings, server_params, key))
    _, outputs, _ = step["round_server"]({}, {}, {"update": client_box["update"][0]})
    assert set(outputs) == {"update.0", "update.1"}


def test_client_step_vmaps_over_many_peers(steps):
    bindings, step = steps
    client = step["round_client"]
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    states = jax.vmap(client.init)(keys)
    _, _, outbox = jax.jit(step["round"].__call__)(
        step["round"].init(keys[0]), {"peers.client": np.arange(5, dtype=np.int32)}, {})
    payload = outbox["global"][0]
    run = jax.vmap(lambda s: client(s, {"peers.server": np.zeros(1, np.int32)},
                                    {"global": payload})[2]["update"][0])
    updates = jax.jit(run)(states)
    server_params = bindings["model"].call("params", step["round"].init(keys[0])["model"])[1]
    for i, k in enumerate(keys):
        want = _direct_client(bindings, server_params, k)
        chex.assert_trees_all_close([u[i] for u in updates], want, rtol=1e-6, atol=1e-6)


def test_missing_message_and_input_are_named(steps):
    _, step = steps
    client = step["round_client"]
    with pytest.raises(BbjaxError, match="port 'global'"):
        client(client.init(jax.random.PRNGKey(0)), {"peers.server": np.zeros(1, np.int32)}, {})
    with pytest.raises(StepError, match="peers.server"):
        client(client.init(jax.random.PRNGKey(0)), {}, {"global": []})


def test_step_reports_its_ports_and_slots(steps):
    _, step = steps
    assert step["round_client"].receives == ["global"]
    assert step["round_client"].sends == ["update"]
    assert step["round_client"].slots == ["data", "model"]
    assert step["round"].sends == ["global"] and step["round"].receives == []
