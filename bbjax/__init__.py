"""bbjax: JAX-native federated and decentralized learning."""

from bbjax import (aggregators, components, compression, data, errors, modules, onnx, privacy,
                   runtime, selection, simulation)
from bbjax.compiler import Compiled, Compiler, load
from bbjax.components import Component, Role
from bbjax.errors import ComponentError
from bbjax.dsl import Graph, Module
from bbjax.runtime import Node, NodeConfig, install
from bbjax.simulation import History, Peers, simulate

__version__ = "0.1.0"

__all__ = ["Compiled", "Compiler", "Component", "ComponentError", "Graph", "History", "Module",
           "Node", "NodeConfig", "Peers", "Role",
           "aggregators", "components", "compression", "data", "errors", "install", "load", "modules",
           "onnx", "privacy", "runtime", "selection", "simulate", "simulation", "__version__"]
