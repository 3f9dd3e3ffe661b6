"""Inputs for every named algorithm at its stage, shared by the contract tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bbjax import compression

N = 5  # cohort rows
POPULATION = 8  # clients a selector chooses among
SHAPES = {"w": (3, 2), "b": (2,)}

# name -> (hyperparameters, stage, needs a key)
SPECS = {
    "fedavg": ({}, "cohort", False),
    "fedavgm": ({"server_learning_rate": 0.7, "server_momentum": 0.9}, "cohort", False),
    "fedadagrad": ({}, "cohort", False),
    "fedadam": ({"eta": 0.05}, "cohort", False),
    "fedyogi": ({}, "cohort", False),
    "qfedavg": ({"q": 0.5}, "cohort", False),
    "median": ({}, "cohort", False),
    "trimmed_mean": ({"proportion": 0.2}, "cohort", False),
    "krum": ({"num_malicious": 0, "num_to_keep": 2}, "cohort", False),
    "bulyan": ({"num_malicious": 0}, "cohort", False),
    "scaffold": ({"num_clients": 10}, "cohort", False),
    "clip": ({"clipping_norm": 0.5}, "cohort", False),
    "gaussian_noise": ({"noise_multiplier": 1.0, "clipping_norm": 0.5}, "cohort", True),
    "adaptive_clipping": ({"noise_multiplier": 0.5, "num_sampled_clients": N,
                           "clipped_count_stddev": 1.0}, "cohort", True),
    "local_gaussian": ({"clipping_norm": 0.5, "epsilon": 2.0, "delta": 1e-5}, "cohort", True),
    "uniform_quantization": ({"bits": 3}, "cohort", False),
    "stochastic_quantization": ({"bits": 3}, "cohort", True),
    "top_k": ({"k": 3, "num_clients": N}, "cohort", False),
    "hadamard_rotation": ({"codec": compression.uniform_quantization(4)}, "cohort", True),
    "select_all": ({"num_clients": POPULATION}, "selection", False),
    "select_fraction": ({"num_clients": POPULATION, "fraction": 0.5}, "selection", True),
    "select_by_tags": ({"client_tags": np.arange(2 * POPULATION).reshape(POPULATION, 2) % 3 > 0,
                        "required": [1], "cohort_size": 2}, "selection", True),
    "select_available": ({"num_clients": POPULATION, "availability": np.full(POPULATION, 0.6)},
                         "selection", True),
}


def tree(rng: np.random.Generator, lead: tuple[int, ...] = (), scale: float = 1.0) -> dict:
    return {k: (scale * rng.standard_normal(lead + s)).astype(np.float32)
            for k, s in SHAPES.items()}


def inputs(name: str, seed: int) -> tuple:
    """``(updates, params, extra)`` for one server of algorithm ``name``."""
    rng = np.random.default_rng(seed)
    stage = SPECS[name][1]
    if stage == "selection":
        candidates = rng.random(POPULATION) < 0.8
        candidates[:3] = True
        return jnp.asarray(candidates), None, {"round": jnp.int32(seed % 7)}
    params = tree(rng)
    updates = tree(rng, (N,), 0.4)
    extra = {"weights": rng.integers(1, 50, N).astype(np.float32),
             "mask": np.arange(N) != seed % N}
    if name == "qfedavg":
        extra["losses"] = rng.uniform(0.5, 2.0, N).astype(np.float32)
    if name == "scaffold":
        extra["control_deltas"] = tree(rng, (N,), 0.1)
    return updates, params, extra


def stack(*trees):
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)
