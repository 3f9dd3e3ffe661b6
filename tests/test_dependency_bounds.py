"""The installed dependencies are within pyproject.toml's bounds, the README's "Tested with"
versions are too, and CI runs the README's test command."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# What the test command installs: the core dependencies and the test extra.
INSTALLED = [Requirement(r) for r in PROJECT["dependencies"] + EXTRAS["test"]]
README = (ROOT / "README.md").read_text()


def _tested_with() -> dict[str, str]:
    """The README's "Tested with" versions, by canonical name."""
    match = re.search(r"\*\*Tested with\*\*[^:]*:(.*?)\.\n", README, re.S)
    assert match, "README.md has no **Tested with** note"
    pairs = [item.split() for item in match.group(1).split(",")]
    return {canonicalize_name(name): version for name, version in pairs}


@pytest.mark.parametrize("requirement", INSTALLED, ids=str)
def test_installed_version_is_within_the_declared_bounds(requirement):
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{requirement.name} is not installed; pyproject.toml requires {requirement}")
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{requirement.name} {version} is installed, outside pyproject.toml's bounds "
        f"{requirement.specifier}")


@pytest.mark.parametrize("requirement",
                         [Requirement(r) for r in PROJECT["dependencies"]
                          + [r for extra in EXTRAS.values() for r in extra]], ids=str)
def test_every_requirement_is_bounded_on_both_sides(requirement):
    operators = {spec.operator for spec in requirement.specifier}
    assert operators == {"=="} or {">=", "<"} <= operators, (
        f"{requirement} needs a lower bound (>=) and an upper bound (<), or an == pin")


def test_readme_tested_versions_are_within_the_bounds():
    tested = _tested_with()
    assert SpecifierSet(PROJECT["requires-python"]).contains(tested.pop("python"))
    bounds: dict[str, SpecifierSet] = {}
    for r in INSTALLED:  # a name in both lists must satisfy both
        name = canonicalize_name(r.name)
        bounds[name] = bounds.get(name, SpecifierSet()) & r.specifier
    for name in ("jax", "jaxlib", "ml-dtypes", "numpy", "onnx", "onnxruntime", "flax", "optax",
                 "orbax-checkpoint", "hypothesis"):
        assert name in tested, f"README.md's Tested with note does not name {name}"
    for name, version in tested.items():
        assert bounds[name].contains(version), (
            f"README.md says {name} {version} was tested; pyproject.toml allows {bounds[name]}")


def test_ci_runs_the_readme_test_command():
    match = re.search(r"Run the tests:\s*```bash\n(.+?)\n```", README, re.S)
    assert match, "README.md has no test command block"
    assert match.group(1) in (ROOT / ".ci" / "run").read_text().splitlines(), (
        ".ci/run does not run README.md's test command exactly")
