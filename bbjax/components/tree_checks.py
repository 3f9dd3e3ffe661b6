"""Trace-time checks that a pytree input matches the structure and shapes a component expects."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bbjax.components.component import PyTree
from bbjax.errors import ComponentError


def spec_of(tree: PyTree) -> PyTree:
    """``tree`` with each leaf replaced by its ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def shared_rows(template: PyTree, *, component: str, role: str) -> int:
    """The length of the leading axis every leaf of ``template`` (a :func:`spec_of`) shares.

    Raises :class:`ComponentError` when the leaves have different leading lengths, a leaf
    is a scalar or the axis is empty."""
    sizes = {t.shape[0] if t.shape else 0 for t in jax.tree.leaves(template)}
    if len(sizes) != 1 or 0 in sizes:
        raise ComponentError(f"x and y leaves need one shared, non-empty leading axis; got "
                             f"sizes {sorted(sizes)}", component=component, role=role)
    (rows,) = sizes
    return rows


def cast_like(
    spec: PyTree, tree: PyTree, what: str, *, component: str, role: str, method: str | None = None
) -> PyTree:
    """``tree`` with each leaf cast to ``spec``'s dtype.

    Raises :class:`ComponentError` naming ``what`` when ``tree``'s structure or a leaf's
    shape differs from ``spec``'s (shapes are static, so this also holds under ``jit``).
    """
    want, got = jax.tree.structure(spec), jax.tree.structure(tree)
    if want != got:
        raise ComponentError(
            f"{what} has tree structure {got}, expected {want}",
            component=component,
            role=role,
            method=method,
        )
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(spec)[0]]
    leaves = jax.tree.leaves(tree)
    for path, s, leaf in zip(paths, jax.tree.leaves(spec), leaves):
        if jnp.shape(leaf) != s.shape:
            raise ComponentError(
                f"{what} leaf {jax.tree_util.keystr(path) or '<root>'} has shape "
                f"{jnp.shape(leaf)}, expected {s.shape}",
                component=component,
                role=role,
                method=method,
            )
    return jax.tree.unflatten(
        want, [jnp.asarray(leaf, s.dtype) for s, leaf in zip(jax.tree.leaves(spec), leaves)]
    )
