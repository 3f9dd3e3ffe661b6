"""The runtime: ``install`` puts compiled partitions on sans-IO Nodes that exchange one
wire envelope.

Envelope decoding is total: malformed bytes raise an :class:`~bbjax.errors.EnvelopeError`,
never anything else (``docs/envelope.md``); a running Node turns whatever a peer sends into
a result or a typed event (``docs/runtime.md``).
"""

from bbjax.runtime.envelope import (
    DEFAULT_LIMITS,
    FORMAT_VERSION,
    Envelope,
    Fill,
    Limits,
    decode,
    encode,
)
from bbjax.errors import EnvelopeError, MalformedEnvelope, OversizedEnvelope, TensorDecodeError, TensorEncodeError, TruncatedEnvelope, UnsupportedVersion
from bbjax.runtime.install import install
from bbjax.runtime.node import (AppOutput, Node, NodeConfig, Outbound, PeerDown, Rejected, Timeout,
                                Unsendable)
from bbjax.runtime import transitions
from bbjax.runtime.node_state import NodeContext, NodeState, state_from_bytes, state_to_bytes
from bbjax.runtime.tensor_codec import (
    decode_tensor,
    encode_tensor,
    tensor_type_name,
    type_hash,
)

__all__ = [
    "AppOutput",
    "Node",
    "NodeConfig",
    "Outbound",
    "PeerDown",
    "Rejected",
    "Timeout",
    "Unsendable",
    "install",
    "NodeContext",
    "NodeState",
    "state_from_bytes",
    "state_to_bytes",
    "transitions",
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "Envelope",
    "EnvelopeError",
    "Fill",
    "Limits",
    "MalformedEnvelope",
    "OversizedEnvelope",
    "TensorDecodeError",
    "TensorEncodeError",
    "TruncatedEnvelope",
    "UnsupportedVersion",
    "decode",
    "decode_tensor",
    "encode",
    "encode_tensor",
    "tensor_type_name",
    "type_hash",
]
