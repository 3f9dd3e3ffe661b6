"""The JAX primitives a Module body records: slot calls and wire sends.

They are traced only (never executed by XLA directly): export turns them into ONNX nodes of
the ``ai.bytesandbrains.role.<role>`` and ``ai.bytesandbrains.wire`` domains, and the
runtime lowers those nodes into calls of the bound components and into outboxes.

A slot call threads its slot's **state token** (a ``uint8`` scalar standing for the
component's state): its last operand is the token before the call and its last result the
token after it. The dataflow thus orders the calls on one slot, and the graph's final
tokens (outputs ``next_state.<slot>``) keep every call alive in the exported graph.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.extend.core import Primitive

slot_call_p = Primitive("bbjax_slot_call")
slot_call_p.multiple_results = True


TOKEN = jax.core.ShapedArray((), np.uint8)


def _slot_call_abstract(*inputs, slot, method, role, peer_class, n_triggers, in_tree,
                        out_avals):
    del inputs, slot, method, role, peer_class, n_triggers, in_tree
    return [*out_avals, TOKEN]


slot_call_p.def_abstract_eval(_slot_call_abstract)

send_p = Primitive("bbjax_send")
send_p.multiple_results = True


def _send_abstract(*operands, port, dest_class):
    del port, dest_class
    return list(operands[:-1])  # the values, now living on the destination class


send_p.def_abstract_eval(_send_abstract)

gather_p = Primitive("bbjax_gather")
gather_p.multiple_results = True


def _gather_abstract(*operands, port, dest_class, source_class):
    """Each value stacked over the senders (leading dim = their peer set's size) + arrival mask."""
    *values, _, senders = operands
    n = senders.shape[0]
    stacked = [jax.core.ShapedArray((n, *v.shape), v.dtype) for v in values]
    return [*stacked, jax.core.ShapedArray((n,), np.bool_)]


gather_p.def_abstract_eval(_gather_abstract)
