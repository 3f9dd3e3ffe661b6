"""bbjax: JAX-native federated and decentralized learning."""

from bbjax import components, errors, onnx, runtime
from bbjax.components import Component, ComponentError, Role

__version__ = "0.1.0"

__all__ = ["Component", "ComponentError", "Role", "components", "errors", "onnx", "runtime",
           "__version__"]
