"""bbjax: JAX-native federated and decentralized learning."""

from bbjax import errors, onnx

__version__ = "0.1.0"

__all__ = ["errors", "onnx", "__version__"]
