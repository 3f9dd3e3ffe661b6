"""The names bbjax adds to ONNX are spelled once, in bbjax.onnx.domains."""

from __future__ import annotations

import ast
from pathlib import Path

import bbjax
from bbjax.components import Role
from bbjax.onnx import domains
from bbjax.onnx.ops.registry import ANY_OP, OP_TABLE

PACKAGE = Path(bbjax.__file__).parent
HOME = PACKAGE / "onnx" / "domains.py"


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that stand alone as statements (docstrings and the like)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)}


def spellings(source: str, text: str) -> list[int]:
    """Lines of ``source`` where a string literal, not a docstring, contains ``text``."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    return sorted(node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and text in node.value and id(node) not in docs)


def test_the_finder_sees_literals_and_f_strings_and_skips_docs_and_comments():
    source = ('"""A module about ai.bytesandbrains."""\n'
              'KEY = "ai.bytesandbrains.slot"  # ai.bytesandbrains in a comment\n'
              'def f(x):\n'
              '    """ai.bytesandbrains.x"""\n'
              '    return f"ai.bytesandbrains.{x}"\n')
    assert spellings(source, domains.PREFIX) == [2, 5]


def test_the_domain_prefix_is_spelled_only_in_domains_py():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != HOME:
            lines = spellings(path.read_text(), domains.PREFIX)
            if lines:
                found[str(path.relative_to(PACKAGE))] = lines
    assert not found, f"spell it with bbjax.onnx.domains instead: {found}"
    assert spellings(HOME.read_text(), domains.PREFIX), "domains.py defines the prefix"


def test_every_domain_and_key_prefix_starts_with_the_one_prefix():
    for name in (domains.RANDOM, domains.LAX, domains.WIRE, domains.GATE, domains.PARTITION,
                 domains.ROLE_PREFIX, domains.KEY_PREFIX):
        assert name.startswith(domains.PREFIX + ".") or name == domains.PREFIX + "."


def test_roles_are_one_table_each_with_its_slot_call_domain_lowered():
    assert Role is domains.Role
    assert domains.ROLES == tuple(role.value for role in Role)
    assert len(set(domains.ROLES)) == len(domains.ROLES) == 8
    for role in Role:
        assert (domains.role_domain(role.value), ANY_OP) in OP_TABLE, role
