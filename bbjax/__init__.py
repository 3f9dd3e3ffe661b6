"""bbjax: JAX-native federated and decentralized learning."""

from bbjax import components, compression, errors, onnx, privacy, runtime, selection
from bbjax.components import Component, ComponentError, Role

__version__ = "0.1.0"

__all__ = ["Component", "ComponentError", "Role", "components", "compression", "errors", "onnx",
           "privacy", "runtime", "selection", "__version__"]
