"""bbjax: JAX-native federated and decentralized learning."""

from bbjax import (aggregators, components, compression, data, errors, modules, onnx, privacy,
                   runtime, selection)
from bbjax.compiler import Compiled, Compiler, load
from bbjax.components import Component, ComponentError, Role
from bbjax.dsl import Graph, Module

__version__ = "0.1.0"

__all__ = ["Compiled", "Compiler", "Component", "ComponentError", "Graph", "Module", "Role",
           "aggregators", "components", "compression", "data", "errors", "load", "modules",
           "onnx", "privacy", "runtime", "selection", "__version__"]
