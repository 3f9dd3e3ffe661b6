"""The names bbjax adds to ONNX, defined here once: the domain prefix and its domains, the
prefix of bbjax's metadata keys, and the roles a component plays (one slot-call domain per
role). Every other module builds its names from these."""

import enum

PREFIX = "ai.bytesandbrains"    # the prefix of every domain below
KEY_PREFIX = PREFIX + "."       # + name: a node, function or model metadata key bbjax writes

RANDOM = PREFIX + ".random"     # key-based sampling: RandomBits, RandomSplit, RandomFoldIn, RandomSeed
LAX = PREFIX + ".lax"           # JAX primitives kept exact: BitcastConvert, ErfInv
WIRE = PREFIX + ".wire"         # Send, Gather (and, after partitioning, Recv)
GATE = PREFIX + ".gate"         # compiler-inserted gates and deadline checks
PARTITION = PREFIX + ".partition"  # the per-peer-class functions of a compiled artifact
ROLE_PREFIX = PREFIX + ".role."  # + role: slot calls, op_type = the method


class Role(enum.Enum):
    """What a component does in a Module; the value is its lower-case name, and its slot
    calls are nodes of domain ``role_domain(value)``."""

    BACKEND = "backend"
    MODEL = "model"
    AGGREGATOR = "aggregator"
    CODEC = "codec"
    DATA_SOURCE = "data_source"
    PEER_SELECTOR = "peer_selector"
    INDEX = "index"
    PROTOCOL = "protocol"


ROLES = tuple(role.value for role in Role)


def role_domain(role: str) -> str:
    """The domain of slot calls on a component of ``role``."""
    return ROLE_PREFIX + role


OPSETS = {RANDOM: 1, LAX: 1, WIRE: 1}  # every other domain under PREFIX: version 1
