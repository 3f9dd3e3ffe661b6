"""A host loop the tests share: one round over installed Nodes exchanging envelope bytes."""

from typing import Any

import numpy as np

from bbjax.runtime import AppOutput, Node, Outbound


def run_round(server: Node, nodes: dict[int, Node]) -> dict[str, Any]:
    """Start ``server``'s round, deliver every Outbound to its peer in ``nodes`` until no
    node has anything to send, and return the AppOutputs by name (as numpy arrays)."""
    outputs: dict[str, Any] = {}
    server.start()
    pending = [server]
    while pending:
        node = pending.pop(0)
        for event in node.poll():
            if isinstance(event, Outbound):
                nodes[event.peer].deliver(event.data)
                pending.append(nodes[event.peer])
            elif isinstance(event, AppOutput):
                outputs[event.name] = np.asarray(event.value)
    return outputs
