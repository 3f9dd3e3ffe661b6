"""The Base-(k+1) graph (Takezawa, Sato, Niwa, Yamada, "Beyond Exponential Graph:
Communication-Efficient Topologies for Decentralized Learning via Finite-time Convergence",
NeurIPS 2023), after the authors' reference code (github.com/yukiTakezawa/BaseGraph).

A round is ``(i, j, w)`` arrays: ``W[i, j] = w`` for ``i != j``; the self weight makes the row
sum to 1. Every round is symmetric, doubly stochastic and gives a node at most ``k``
neighbours; the rounds' product is ``11^T / n``.

* **k-peer hyper-hypercube** (``n`` with no prime factor above ``k + 1``): write
  ``n = f_1 ... f_m`` with factors ``f <= k + 1`` (greedily, the largest first) and node ids in
  that mixed radix; round ``r`` averages each clique of nodes that differ only in digit ``r``.
* **Simple Base-(k+1) graph** (any ``n``): write ``n = sum_l a_l (k+1)^{p_l}`` in base
  ``k + 1`` and split the nodes into groups ``V_l`` of those sizes, ``V_l`` into ``a_l`` chunks
  of ``(k+1)^{p_l}``. (1) Every group runs its hyper-hypercube (the shorter ones repeat) until
  ``V_1``'s is done: each group holds its mean. (2) In round ``q`` of the next ones, every node
  of a later group ``V_l`` (``l > q``) takes one unused node of each chunk of ``V_q``, with
  weight ``|V_q| / (a_q * sum_{l >= q} |V_l|)`` per edge: the later groups move to the mean of
  ``V_q, V_{q+1}, ...``, and the chunks of ``V_q`` now each have the global mean; the unused
  nodes of ``V_q`` average in cliques of ``k + 1`` (a no-op on the mean that helps
  D-SGD). (3) From the round after its own, a group runs the hyper-hypercube of its chunks
  (of the whole group when it is smaller than ``k + 1``), repeating, until ``V_1``'s chunks are
  done: every chunk holds its mean, the global mean.
* **Base-(k+1) graph**: with ``n = s * r``, ``s`` the part of ``n`` whose prime factors are at
  most ``k + 1``, the simple graph on ``s`` blocks of ``r`` consecutive nodes, then the
  hyper-hypercube across the blocks; this when not longer than the simple graph on all ``n``.
"""

from __future__ import annotations

import numpy as np

Round = tuple[np.ndarray, np.ndarray, np.ndarray]


def rounds(n: int, k: int) -> list[Round]:
    """The Base-(k+1) graph's rounds on nodes ``0 .. n - 1``."""
    simple = _simple(n, k)
    smooth = _smooth_part(n, k)
    rest = n // smooth
    blocks = np.arange(n).reshape(smooth, rest)
    product = [_relabel(r, blocks) for r in _simple(rest, k)] \
        + [_relabel(r, blocks.T) for r in _hyper_hypercube(smooth, k)]
    return simple if len(simple) < len(product) else product


def _smooth_part(n: int, k: int) -> int:
    """The largest divisor of ``n`` with no prime factor above ``k + 1``."""
    smooth, rest = 1, n
    for factor in range(2, k + 2):
        while rest % factor == 0:
            rest //= factor
            smooth *= factor
    return smooth


def _factors(m: int, k: int) -> list[int]:
    """``m``'s factors ``<= k + 1``, taken greedily from the largest, in the reference's order."""
    factors = []
    for factor in range(k + 1, 1, -1):
        while m % factor == 0:
            factors.append(factor)
            m //= factor
    return factors[::-1]


def _empty() -> Round:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)


def _cliques(groups: np.ndarray) -> Round:
    """Every row of ``groups`` (int ``[c, f]``) averaged: weight ``1 / f`` between members."""
    size = groups.shape[1]
    i = np.repeat(groups, size, axis=1).ravel()
    j = np.tile(groups, (1, size)).ravel()
    keep = i != j
    return i[keep], j[keep], np.full(int(keep.sum()), 1.0 / size)


def _merge(parts: list[Round]) -> Round:
    parts = [_empty(), *parts]
    return tuple(np.concatenate([p[a] for p in parts]) for a in range(3))


def _relabel(round_: Round, labels: np.ndarray) -> Round:
    """The round on local ids ``0 .. m - 1`` played by every row of ``labels`` (``[g, m]``)."""
    i, j, w = round_
    return labels[:, i].ravel(), labels[:, j].ravel(), np.tile(w, labels.shape[0])


def _hyper_hypercube(m: int, k: int) -> list[Round]:
    """The k-peer hyper-hypercube on ``m`` nodes (no prime factor of ``m`` above ``k + 1``)."""
    if m == 1:
        return [_empty()]
    nodes, stride, result = np.arange(m), 1, []
    for factor in _factors(m, k):
        result.append(_cliques(nodes.reshape(-1, factor, stride).transpose(0, 2, 1)
                               .reshape(-1, factor)))
        stride *= factor
    return result


def _simple(n: int, k: int) -> list[Round]:
    """The simple Base-(k+1) graph on ``n`` nodes."""
    if n == 1 or _smooth_part(n, k) == n:
        return _hyper_hypercube(n, k)
    base = k + 1
    power = 1
    while power * base <= n:
        power *= base
    sizes, digits, powers = [], [], []
    rest = n
    while rest:
        if rest >= power:
            digits.append(rest // power)
            powers.append(power)
            sizes.append(digits[-1] * power)
            rest -= sizes[-1]
        power //= base
    starts = np.cumsum([0, *sizes])
    groups = [np.arange(starts[g], starts[g + 1]) for g in range(len(sizes))]
    chunks = [group.reshape(digit, size) for group, digit, size in zip(groups, digits, powers)]
    whole = [[_relabel(r, group[None]) for r in _hyper_hypercube(group.size, k)]
             for group in groups]
    chunked = [[_relabel(r, chunk) for r in _hyper_hypercube(chunk.shape[1], k)]
               for chunk in chunks]
    count, first = len(groups), len(whole[0])
    played = [0] * count
    result: list[Round] = []
    m = 0
    while played[0] < len(chunked[0]):
        parts: list[Round] = []
        unused = None
        for g in reversed(range(count)):
            if m < first:
                parts.append(whole[g][m % len(whole[g])])
            elif m < first + g:
                q = m - first
                if unused is None:
                    unused = [list(chunk) for chunk in chunks[q]]
                share = sizes[q] / sum(sizes[q:]) / digits[q]
                for i in groups[g]:
                    for chunk in unused:
                        j = chunk.pop()
                        parts.append((np.array([i, j]), np.array([j, i]), np.full(2, share)))
            elif m == first + g and g != count - 1:
                left = np.concatenate([np.array(chunk, dtype=np.int64) for chunk in unused])
                for start in range(0, left.size - 1, base):
                    parts.append(_cliques(left[None, start:start + base]))
            else:
                own = whole[g] if sizes[g] < base else chunked[g]
                parts.append(own[played[g] % len(own)])
                played[g] += 1
        result.append(_merge(parts))
        m += 1
    return result
