"""The ONNX op implementations; importing this package fills :data:`registry.OP_TABLE`."""

from bbjax.onnx.ops import (  # noqa: F401  (each module registers its ops)
    control_flow,
    elementwise,
    linalg,
    nn,
    random,
    reduction,
    runtime,
    sequence,
    tensor,
)
from bbjax.onnx.ops.registry import OP_TABLE, op

__all__ = ["OP_TABLE", "op"]
