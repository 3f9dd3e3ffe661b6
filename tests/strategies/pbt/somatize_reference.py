"""somatize's PbtRunner rules (seeds.md §3.5) in plain Python, independent of bbjax: lists
of floats in, slot indexes out."""

from __future__ import annotations

import math


def guarded(fitness: list[float], finite_state: list[bool]) -> list[float]:
    """A failing member (non-finite fitness or state) gets −∞."""
    return [f if math.isfinite(f) and ok else -math.inf
            for f, ok in zip(fitness, finite_state)]


def ranking(fitness: list[float]) -> list[int]:
    """Slots best first: descending fitness, ties to the lower slot."""
    return sorted(range(len(fitness)), key=lambda i: (-fitness[i], i))


def truncation_cutoff(n: int, fraction: float) -> int:
    return min(max(math.ceil(n * fraction), 1), n // 2)


def truncation(fitness: list[float], fraction: float) -> tuple[list[int], list[bool]]:
    """``(parent, explored)``: for i < cutoff the i-th worst copies the i-th best; the
    bottom cutoff positions are explored."""
    n = len(fitness)
    order = ranking(fitness)
    cut = truncation_cutoff(n, fraction)
    parent = list(range(n))
    for i in range(cut):
        parent[order[n - 1 - i]] = order[i]
    explored = [False] * n
    for slot in order[n - cut:]:
        explored[slot] = True
    return parent, explored


def binary(fitness: list[float], opponents: list[int]) -> tuple[list[int], list[bool]]:
    """``(parent, explored)``: the member at position n - cutoff + i (cutoff = n // 2)
    faces top position ``opponents[i]`` and copies it when strictly worse."""
    n = len(fitness)
    order = ranking(fitness)
    cut = n // 2
    parent = list(range(n))
    explored = [False] * n
    for i in range(cut):
        me = order[n - cut + i]
        opponent = order[opponents[i]]
        if fitness[me] < fitness[opponent]:
            parent[me] = opponent
        explored[me] = True
    return parent, explored
