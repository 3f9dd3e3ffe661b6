"""Float64 numpy references and small random graphs for the decentralized rounds' tests."""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.components import flax_model, replay_data_source
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.strategies.decentralized.topology import Topology, from_neighbours


def padded(rows: list[list[int]]) -> np.ndarray:
    """In-neighbour lists as an int32 ``[N, k]`` array, -1 padding."""
    width = max(len(r) for r in rows)
    return np.array([r + [-1] * (width - len(r)) for r in rows], np.int32)


def irregular_graph(n: int, rng: np.random.Generator, chords: int) -> Topology:
    """A connected undirected graph of uneven degrees (a ring plus ``chords`` random
    edges), Metropolis-Hastings weights."""
    edges = {tuple(sorted((i, (i + 1) % n))) for i in range(n)}
    while len(edges) < n + chords:
        i, j = rng.choice(n, 2, replace=False)
        edges.add(tuple(sorted((int(i), int(j)))))
    rows = [sorted({j for e in edges for j in e if i in e and j != i}) for i in range(n)]
    return from_neighbours(padded(rows), "metropolis_hastings", name="irregular")


def directed_graph(n: int, rng: np.random.Generator, extra: int) -> Topology:
    """A strongly connected directed graph (the cycle ``i -> i + 1`` plus ``extra`` random
    arcs), push-sum (column-stochastic) weights."""
    arcs = {((i - 1) % n, i) for i in range(n)}  # (sender, receiver)
    while len(arcs) < n + extra:
        j, i = rng.choice(n, 2, replace=False)
        arcs.add((int(j), int(i)))
    rows = [sorted(j for j, r in arcs if r == i) for i in range(n)]
    return from_neighbours(padded(rows), "push_sum", name="directed")


def dense(topology: Topology, t: int) -> np.ndarray:
    """Round ``t``'s mixing matrix, float64, from the topology's float32 arrays."""
    n = topology.neighbours.shape[0]
    w = np.zeros((n, n))
    period = topology.weights.shape[0]
    for i in range(n):
        w[i, i] = topology.self_weights[t % period, i]
        for slot, j in enumerate(topology.neighbours[i]):
            if j >= 0:
                w[i, j] += topology.weights[t % period, i, slot]
    return w


def compile_round(module: bbjax.Module, bindings: dict) -> bbjax.Compiled:
    compiler = bbjax.Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    return compiler.compile(module)


def logistic_setup(n: int, rounds: int, rng: np.random.Generator, *, features: int = 5,
                   classes: int = 3, rows: int = 12, batch: int = 4,
                   learning_rate: float = 0.5):
    """A logistic-regression model on plain SGD, and per-node data replayed in a known
    order: ``(model, source, data_args, x, y, order)``, ``order[i, r]`` the rows of node
    ``i``'s batch in round ``r``."""
    x = rng.normal(size=(n, rows, features)).astype(np.float32)
    y = rng.integers(0, classes, (n, rows)).astype(np.int32)
    order = np.stack([[rng.choice(rows, batch, replace=False) for _ in range(rounds)]
                      for _ in range(n)]).astype(np.int32)          # [n, rounds, batch]
    model = flax_model(LogisticRegression(features, classes, rngs=nnx.Rngs(0)),
                       optax.sgd(learning_rate), cross_entropy)
    source = replay_data_source(x[0], y[0], order[0][:, None])
    return model, source, {"data": (x, y, order[:, :, None])}, x, y, order


def initial_params(model) -> tuple[np.ndarray, np.ndarray]:
    params = model.init(jax.random.key(0)).params["out"]
    return np.asarray(params["kernel"], np.float64), np.asarray(params["bias"], np.float64)


def softmax_gradient(kernel: np.ndarray, bias: np.ndarray, x: np.ndarray,
                     y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of the mean softmax cross-entropy of ``x @ kernel + bias``, float64."""
    logits = x.astype(np.float64) @ kernel + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    p /= len(y)
    return x.T.astype(np.float64) @ p, p.sum(0)


def node_params(states: dict, slot: str = "model") -> tuple[np.ndarray, np.ndarray]:
    out = states["node"][slot].params["out"]
    return np.asarray(out["kernel"]), np.asarray(out["bias"])
