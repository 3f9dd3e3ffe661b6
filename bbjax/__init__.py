"""bbjax: JAX-native federated and decentralized learning.

The names below load on first use (PEP 562), so that importing one light subpackage, e.g.
:mod:`bbjax.onnxclient` or :mod:`bbjax.errors`, does not import JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("aggregators", "algorithms", "components", "compression", "data", "errors",
                "experiments", "models", "modules", "onnx", "privacy", "runtime", "selection",
                "simulation")
_NAMES = {"Compiled": "bbjax.compiler", "Compiler": "bbjax.compiler", "load": "bbjax.compiler",
          "Component": "bbjax.components", "Role": "bbjax.components",
          "ComponentError": "bbjax.errors", "Graph": "bbjax.dsl", "Module": "bbjax.dsl",
          "Node": "bbjax.runtime", "NodeConfig": "bbjax.runtime", "install": "bbjax.runtime",
          "History": "bbjax.simulation", "Peers": "bbjax.simulation",
          "simulate": "bbjax.simulation"}

__all__ = ["Compiled", "Compiler", "Component", "ComponentError", "Graph", "History", "Module",
           "Node", "NodeConfig", "Peers", "Role",
           "aggregators", "algorithms", "components", "compression", "data", "errors", "experiments",
           "install", "load", "models", "modules", "onnx", "privacy", "runtime", "selection", "simulate", "simulation", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"bbjax.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bbjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
