"""The canonical IR: JAX functions to ONNX (:func:`export`) and back (:func:`lower`)."""

from bbjax.onnx.lower import lower, supported_ops

__all__ = ["lower", "supported_ops"]
