"""Resolving ``--components MODULE:FUNCTION``: the slot -> component bindings of a peer."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from bbjax.errors import ConfigError


def load_components(spec: str, peer: int) -> dict[str, Any]:
    """``function(peer)`` of ``module`` for ``spec`` = ``"module:function"`` (the current
    directory is importable); it must return a mapping slot -> component. Else
    :class:`ConfigError`."""
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise ConfigError(f"--components: expected MODULE:FUNCTION, got {spec!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"--components: cannot import {module_name!r}: {e}") from e
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"--components: {module_name!r} has no function {function_name!r}")
    components = function(peer)
    if not isinstance(components, dict) or not all(isinstance(k, str) for k in components):
        raise ConfigError(f"--components: {spec}({peer}) gave {type(components).__name__}, "
                          "not a dict slot -> component")
    return components
