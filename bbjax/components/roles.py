"""The eight roles a component can play and each role's method contract.

Every method of a (non-Backend) component is ``fn(state, *inputs) -> (state, outputs)``.
A contract lists, per role, the required and optional methods: their input names (after
``state``), their output names and a one-line meaning. ``outputs`` is read by arity: no
names means the method returns ``()``, one name means ``outputs`` is that value (any
pytree), several names mean ``outputs`` is a tuple of that length. Static parameters
that fix shapes (a sample size ``n``, a top-``k``) are bound when the component is built,
never passed as inputs.

A Backend holds no state methods: its ``methods`` map ONNX op keys ``(domain, op_type)``
to op-table implementations ``impl(ctx, *inputs)`` (see :mod:`bbjax.onnx.ops.registry`)
that override the lowering's defaults. A Protocol's method set is open: any named ops,
with any inputs and outputs, plus an optional ``on_timer`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bbjax.onnx.domains import Role  # the one table of roles, beside their ONNX domains


@dataclass(frozen=True)
class MethodSpec:
    """One contract method: input names after ``state`` and output names (``None``: any)."""

    name: str
    inputs: tuple[str, ...] | None
    outputs: tuple[str, ...] | None
    doc: str

    @property
    def signature(self) -> str:
        """E.g. ``"aggregate(state) -> (state, (result, total_weight))"``."""
        ins = ", ".join(("state", *self.inputs)) if self.inputs is not None else "state, *inputs"
        if self.outputs is None:
            outs = "outputs"
        elif len(self.outputs) == 1:
            outs = self.outputs[0]
        else:
            outs = "(" + ", ".join(self.outputs) + ")"
        return f"{self.name}({ins}) -> (state, {outs})"


@dataclass(frozen=True)
class Contract:
    """The methods a role requires and allows; ``open`` roles accept any other method."""

    role: Role
    required: tuple[MethodSpec, ...]
    optional: tuple[MethodSpec, ...] = ()
    open: bool = False

    def spec(self, name: str) -> MethodSpec | None:
        """The spec of method ``name``, or None when the contract does not name it."""
        for spec in self.required + self.optional:
            if spec.name == name:
                return spec
        return None


_M = MethodSpec

CONTRACTS: Mapping[Role, Contract] = MappingProxyType(
    {
        Role.BACKEND: Contract(Role.BACKEND, required=()),
        Role.MODEL: Contract(
            Role.MODEL,
            required=(
                _M("forward", ("x",), ("y",), "the model's output on a batch"),
                _M("params", (), ("params",), "the trainable parameters as a pytree"),
                _M("load_parameters", ("params",), (), "replace the parameters"),
            ),
            optional=(
                _M("apply_delta", ("delta",), (), "add a pytree delta to the parameters"),
                _M("loss", ("x", "y"), ("loss",), "the scalar loss on a batch, no update"),
                _M("train", ("x", "y"), ("loss",), "one optimizer step on a batch; its loss"),
                _M("load_control", ("control",), (), "set the server's control variate (SCAFFOLD)"),
                _M("control_update", (), ("delta",),
                   "update the client's control variate after local training; its change"),
            ),
        ),
        Role.AGGREGATOR: Contract(
            Role.AGGREGATOR,
            required=(
                _M(
                    "contribute",
                    ("peer", "tensor", "weight"),
                    (),
                    "buffer a peer's tensor with its weight (e.g. a sample count)",
                ),
                _M(
                    "aggregate",
                    (),
                    ("result", "total_weight"),
                    "combine the buffered contributions and clear the buffer",
                ),
            ),
            optional=(
                _M(
                    "aggregate_stacked",
                    ("global", "tensors", "weights", "mask", "extra"),
                    ("result", "total_weight"),
                    "combine a whole cohort's stacked tensors at once (what g.gather gives); "
                    "extra: a rule's per-client input (losses, control deltas)",
                ),
                _M("rule_state", (), ("state",), "the rule's state (e.g. SCAFFOLD's control)"),
            ),
        ),
        Role.CODEC: Contract(
            Role.CODEC,
            required=(
                _M("encode", ("x",), ("payload",), "the wire payload of a value"),
                _M("decode", ("payload",), ("x",), "the value rebuilt from a payload"),
            ),
            optional=(_M("train", ("samples",), (), "fit the codec to sample values"),),
        ),
        Role.DATA_SOURCE: Contract(
            Role.DATA_SOURCE,
            required=(_M("next_batch", (), ("x", "y"), "the next batch and its labels"),),
            optional=(
                _M("reset", (), (), "start a new pass over the data"),
                _M("num_examples", (), ("count",), "how many examples the source holds"),
                _M("start_round", ("round",), (),
                   "told the round's index (int32, from 0) before the peer's round starts; "
                   "a simulation calls it"),
            ),
        ),
        Role.PEER_SELECTOR: Contract(
            Role.PEER_SELECTOR,
            required=(
                _M("sample", (), ("peers",), "peers drawn by the selector's policy"),
                _M("current_view", (), ("peers",), "every peer the selector knows"),
            ),
            optional=(_M("select", ("query",), ("peers",), "the peers chosen for a query"),),
        ),
        Role.INDEX: Contract(
            Role.INDEX,
            required=(
                _M("add", ("vector",), ("id",), "store a vector; its new id"),
                _M("search", ("query",), ("ids", "scores"), "the k best matches of a query"),
                _M("remove", ("id",), (), "delete the vector with this id"),
            ),
            optional=(_M("train", ("samples",), (), "fit the index to sample vectors"),),
        ),
        Role.PROTOCOL: Contract(
            Role.PROTOCOL,
            required=(),
            optional=(_M("on_timer", None, None, "run when the protocol's timer fires"),),
            open=True,
        ),
    }
)


def contract(role: Role) -> Contract:
    """The contract of ``role``."""
    return CONTRACTS[role]
