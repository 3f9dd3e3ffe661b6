"""The ONNX domains bbjax adds, and their opset versions."""

PREFIX = "ai.bytesandbrains"
RANDOM = "ai.bytesandbrains.random"  # key-based sampling: RandomBits, RandomSplit, RandomFoldIn, RandomSeed
LAX = "ai.bytesandbrains.lax"        # JAX primitives kept exact: BitcastConvert, ErfInv

WIRE = "ai.bytesandbrains.wire"      # Send, Gather (and, after partitioning, Recv)
GATE = "ai.bytesandbrains.gate"      # compiler-inserted gates and deadline checks
ROLE_PREFIX = "ai.bytesandbrains.role."  # + role: slot calls, op_type = the method


ROLES = ("backend", "model", "aggregator", "codec", "data_source", "peer_selector", "index",
         "protocol")  # the values of bbjax.components.Role


def role_domain(role: str) -> str:
    """The domain of slot calls on a component of ``role``."""
    return ROLE_PREFIX + role


OPSETS = {RANDOM: 1, LAX: 1, WIRE: 1}  # every other ai.bytesandbrains.* domain: version 1
