"""A bbjax peer without JAX: an exported client partition on onnxruntime.

``bbjax export-client ARTIFACT --target CLASS -o client.onnx`` writes a partition whose slots
were inlined as a standalone ONNX model; :class:`OnnxClient` runs it and speaks bbjax's
envelope bytes (:mod:`bbjax.onnxclient.codec`, byte-compatible with
:mod:`bbjax.runtime.envelope` and :mod:`bbjax.runtime.tensor_codec`). This package imports
only onnx, onnxruntime, numpy and the standard library (and :mod:`bbjax.errors`).
"""

from bbjax.onnxclient.client import AppOutput, OnnxClient, Outbound, Rejected

__all__ = ["AppOutput", "OnnxClient", "Outbound", "Rejected"]
