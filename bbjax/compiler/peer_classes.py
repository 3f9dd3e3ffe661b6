"""Pass ``infer_peer_classes``: stamp every node with the peer class it runs on.

Rules (bytesandbrains'): ordinary graph inputs live on ``self``; ``peers.<class>`` inputs
and PeerSelector outputs are peer sets of that class; a Send runs where its payload lives
and its outputs live on the destination class; every other op runs where its data inputs
live, and they must agree. A slot call with no data inputs runs where the previous call on
its slot ran (``self`` for the first). State tokens, peer sets and constants carry no class;
ops on constants only run wherever they are needed (home ``""``).
"""

from __future__ import annotations

import onnx

from bbjax.compiler import annotations as ann
from bbjax.errors import CrossClassDataflowError
from bbjax.dsl.module import PEER_CLASS_KEY

_CLASSLESS = None


def infer_peer_classes(model: onnx.ModelProto, context) -> onnx.ModelProto:
    model = ann.copy_model(model)
    graph = model.graph
    meta = {p.key: p.value for p in model.metadata_props}
    value_class: dict[str, str | None] = {}
    tokens: dict[str, str] = {}  # token value -> home of the call that produced it
    peer_sets: set[str] = set()
    for init in graph.initializer:
        value_class[init.name] = _CLASSLESS
    for inp in graph.input:
        if inp.name in value_class:
            continue
        if PEER_CLASS_KEY + inp.name in meta:
            peer_sets.add(inp.name)
        elif inp.name.startswith("state."):
            tokens[inp.name] = ""
        else:
            value_class[inp.name] = ann.SELF
    for node in graph.node:
        home = _home(node, value_class, tokens, peer_sets)
        ann.put(node, ann.HOME, home or "")
        outputs = list(node.output)
        if ann.is_slot_call(node):
            *data_out, token = outputs
            tokens[token] = home or ann.SELF
            if ann.get(node, ann.PEER_CLASS):
                peer_sets.update(data_out)
                continue
            outputs = data_out
        if ann.is_send(node):
            home = ann.get(node, ann.DEST_CLASS)
        for out in outputs:
            value_class[out] = home
    return model


def _home(node: onnx.NodeProto, value_class: dict, tokens: dict, peer_sets: set) -> str | None:
    names = [i for i in node.input if i]
    if ann.is_slot_call(node):
        names = names[:-1]  # the state token
    data = [n for n in names if n not in peer_sets and n not in tokens]
    classes = sorted({value_class[n] for n in data if value_class.get(n) is not None})
    if len(classes) > 1:
        raise CrossClassDataflowError(
            f"{ann.label(node)} reads values of peer classes {classes[0]!r} and {classes[1]!r}; "
            "move data between classes with g.send")
    if classes:
        return classes[0]
    if ann.is_slot_call(node):
        previous = tokens.get(node.input[-1], "")
        return previous or ann.SELF
    if ann.is_send(node):
        return ann.SELF
    return _CLASSLESS
