"""Whatever bytes arrive, a Node's deliver and poll never raise and accepted data is kept."""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbjax.compiler import Compiler
from bbjax.runtime.install import install
from bbjax.runtime.node import NodeConfig, Outbound, Rejected
from tests.dsl.test_module import Round, data_source


@functools.cache
def _round():
    from flax import nnx
    import optax
    from bbjax.components import flax_model
    from tests.dsl.test_module import Net, ce
    model = flax_model(Net(nnx.Rngs(0)), optax.sgd(0.1), ce)
    bindings = {"model": model, "data": data_source()}
    compiled = Compiler().bind("model", model).bind("data", bindings["data"]).compile(Round())
    server = install(0, compiled, ["round"], bindings, NodeConfig(peers={"client": [1]}))
    server.start()
    valid = next(s.data for s in server.poll() if isinstance(s, Outbound))
    return compiled, bindings, valid


def _client():
    compiled, bindings, _ = _round()
    return install(1, compiled, ["round_client"], bindings, NodeConfig(peers={"server": [0]}))


def _mutate(data: bytes, position: int, value: int, cut: int) -> bytes:
    buf = bytearray(data)
    buf[position % len(buf)] = value
    return bytes(buf[: max(cut, 0) or len(buf)])


SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@given(st.lists(st.binary(max_size=200), max_size=5))
@SETTINGS
def test_random_bytes_never_crash_a_node(blobs):
    node = _client()
    for blob in blobs:
        node.deliver(blob)
    steps = node.poll()
    assert all(isinstance(s, Rejected) for s in steps)
    assert len(steps) == len(blobs)


@given(st.integers(0, 10**6), st.integers(0, 255), st.integers(-5, 400))
@SETTINGS
def test_mutated_envelopes_never_crash_and_the_valid_one_still_runs(position, value, cut):
    _, _, valid = _round()
    node = _client()
    node.deliver(_mutate(valid, position, value, cut))
    node.deliver(valid)
    steps = node.poll()
    assert sum(isinstance(s, Outbound) for s in steps) == 1  # the valid envelope ran the round
    assert all(isinstance(s, (Rejected, Outbound)) for s in steps)
    assert node.pending("global") == 0 and np.all(np.isfinite(
        np.asarray(node.states["model"].params["dense"]["kernel"])))
