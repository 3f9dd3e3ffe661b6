"""``install`` refuses receive ports a Node could never fill, naming the port."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import bbjax
from bbjax.dsl import Graph, Module
from bbjax.errors import InstallError
from bbjax.runtime.node import NodeConfig
from tests.compiler.test_passport_bindings import holder


class Collect(Module):
    """Nodes gather their vectors to a hub."""

    name = "collect"

    def body(self, g: Graph) -> None:
        nodes = g.peers("node")
        tick = g.send("tick", jnp.zeros((), jnp.float32), to=nodes)
        stacked, _ = g.gather("up", g.slot("state").value(after=tick), to=g.peers("hub"),
                              senders=nodes)
        g.output("total", stacked.sum())


class Forward(Module):
    """``self`` forwards an input of symbolic length to its nodes."""

    name = "forward"

    def body(self, g: Graph) -> None:
        x = g.input("x", jax.ShapeDtypeStruct(("n", 2), jnp.float32))
        g.output("y", g.send("x", x, to=g.peers("node")))


def test_a_gather_needs_its_sender_class_in_the_config():
    compiled = bbjax.Compiler().bind("state", holder()).compile(Collect())
    with pytest.raises(InstallError, match="port 'up' gathers from class 'node'"):
        bbjax.install(0, compiled, ["collect_hub"])
    node = bbjax.install(0, compiled, ["collect_hub"], config=NodeConfig(peers={"node": [1, 2]}))
    assert node.port_specs["up"].stacked_over == "node"


def test_a_receive_of_symbolic_shape_is_refused():
    compiled = bbjax.Compiler().compile(Forward())
    with pytest.raises(InstallError, match=r"port 'x' carries arrays of symbolic shapes \[\('n', 2\)\]"):
        bbjax.install(1, compiled, ["forward_node"])
