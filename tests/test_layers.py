"""The engine's layers: the two runners share the compiler's step and import neither each
other nor the applications built on them (experiments, ready-made modules, the model zoo)."""

from __future__ import annotations

import subprocess
import sys

import pytest

APPLICATIONS = {"experiments", "models", "modules"}


def _loaded(package: str) -> set[str]:
    """The bbjax subpackages a fresh interpreter has loaded after importing ``package``."""
    code = (f"import sys, {package}; "
            "print(' '.join({m.split('.')[1] for m in sys.modules if m.startswith('bbjax.')}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("runner, other", [("simulation", "runtime"), ("runtime", "simulation")])
def test_a_runner_imports_the_compiler_not_the_other_runner_nor_applications(runner, other):
    loaded = _loaded(f"bbjax.{runner}")
    assert {runner, "compiler"} <= loaded
    assert not loaded & (APPLICATIONS | {other})
