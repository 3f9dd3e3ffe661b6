"""The canonical IR: JAX functions to ONNX (:func:`export`) and back (:func:`lower`)."""

from bbjax.onnx.export import export
from bbjax.onnx.lower import lower, supported_ops

__all__ = ["export", "lower", "supported_ops"]
