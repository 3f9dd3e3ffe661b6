"""The authoring surface: Modules, their Graph recorder, peer sets."""

from bbjax.errors import ModuleError, UnboundSlotError
from bbjax.dsl.graph import Graph, PeerSet
from bbjax.dsl.module import Module

__all__ = ["Graph", "Module", "ModuleError", "PeerSet", "UnboundSlotError"]
