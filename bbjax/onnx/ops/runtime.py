"""Slot calls and wire ops, delegated to the :class:`Handlers` of the call (``ctx.handlers``).

A lowered partition gets its handlers as an argument, ``lowered(*args, handlers=h)``; they
serve that call only, so two calls (interleaved, nested, or traced on two threads) never
share them. :class:`bbjax.compiler.step.StepRuntime` is the handlers of a partition step.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.onnx import domains
from bbjax.onnx.ops.registry import ANY_OP, op
from bbjax.onnx.treedef import treedef_from_json


class Handlers(Protocol):
    """What a lowered partition's slot calls and wire ops act on during one call."""

    def call_slot(self, slot: str, method: str, args: Any) -> list:
        """Run ``method`` of the component bound to ``slot`` on ``args`` (its inputs as a
        tuple); the output leaves."""

    def send(self, port: str, leaves: list, peers: Any) -> None:
        """Send the payload ``leaves`` on ``port`` to ``peers`` (peer ids)."""

    def receive(self, port: str) -> list:
        """The payload delivered on ``port`` (a gather's: stacked, then the arrival mask)."""


def _meta(ctx, name: str, default: str | None = None) -> str | None:
    """The node's bbjax metadata entry ``name``."""
    return ctx.metadata(domains.KEY_PREFIX + name, default)


def slot_call(ctx, *inputs):
    """``role.<role>::<method>``: the bound component's method on the slot's state."""
    n_triggers = int(_meta(ctx, "n_triggers", "0"))
    data = list(inputs[: len(inputs) - 1 - n_triggers])
    in_tree = treedef_from_json(_meta(ctx, "in_tree"))
    args = jax.tree.unflatten(in_tree, [jnp.asarray(v) for v in data])
    leaves = ctx.handlers.call_slot(_meta(ctx, "slot"), ctx.op_type, args)
    return (*leaves, np.zeros((), np.uint8))  # the slot's new state token


for _role in domains.ROLES:
    op(ANY_OP, domain=domains.role_domain(_role), foldable=False)(slot_call)


def _ungated(ctx, inputs: tuple) -> tuple:
    """The inputs without the trailing gate triggers the compiler added."""
    n_gates = int(_meta(ctx, "n_gates", "0"))
    return inputs[: len(inputs) - n_gates]


@op(ANY_OP, domain=domains.GATE, foldable=False)
def gate(ctx):
    """A compiler-inserted gate: the Node enforces it; in the step it only orders ops."""
    return np.zeros((), np.uint8)


@op("Send", domain=domains.WIRE, foldable=False)
def send(ctx, *inputs):
    """Put the payload in the outbox for the peer set (last input); output the sentinel."""
    *leaves, peers = _ungated(ctx, inputs)
    ctx.handlers.send(_meta(ctx, "port"), [jnp.asarray(v) for v in leaves], peers)
    return np.zeros((), np.uint8)


@op("Gather", domain=domains.WIRE, foldable=False)
def gather(ctx, *inputs):
    """The sending side of a gather: the payload to the destination peers (last input)."""
    *leaves, peers = _ungated(ctx, inputs)
    ctx.handlers.send(_meta(ctx, "port"), [jnp.asarray(v) for v in leaves], peers)
    return np.zeros((), np.uint8)


@op("Recv", domain=domains.WIRE, foldable=False)
def recv(ctx, *gates):
    """The payload delivered for this port (inputs: only gate triggers)."""
    leaves = ctx.handlers.receive(_meta(ctx, "port"))
    if len(leaves) != ctx.num_outputs:
        raise ctx.error(f"port {_meta(ctx, 'port')!r} delivered {len(leaves)} "
                        f"arrays, the receive expects {ctx.num_outputs}")
    return tuple(leaves)
