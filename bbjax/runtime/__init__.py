"""The runtime: compiled partitions as pure steps, sans-IO Nodes, and the wire envelope.

Envelope decoding is total: malformed bytes raise an
:class:`~bbjax.runtime.errors.EnvelopeError`, never anything else (``docs/envelope.md``).
"""

from bbjax.runtime.envelope import (
    DEFAULT_LIMITS,
    FORMAT_VERSION,
    MAGIC,
    Envelope,
    Fill,
    Limits,
    decode,
    encode,
)
from bbjax.errors import EnvelopeError, MalformedEnvelope, OversizedEnvelope, TensorDecodeError, TensorEncodeError, TruncatedEnvelope, UnsupportedVersion
from bbjax.runtime.tensor_codec import (
    decode_tensor,
    encode_tensor,
    fnv1a64,
    tensor_type_name,
    type_hash,
)

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "MAGIC",
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
    "fnv1a64",
    "tensor_type_name",
    "type_hash",
]
