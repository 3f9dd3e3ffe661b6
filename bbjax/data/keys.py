"""The numpy generator a JAX key determines, for host-side data preparation."""

from __future__ import annotations

import jax
import numpy as np


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A ``numpy`` Generator (PCG64) seeded with the words of the concrete JAX ``key``.

    Partitioning and splitting run on the host (their outputs have data-dependent shapes);
    this makes them deterministic functions of the key. Accepts typed (``jax.random.key``)
    and raw ``uint32`` (``jax.random.PRNGKey``) keys; the same key gives the same generator.
    """
    words = np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel()
    return np.random.default_rng(words.tolist())
