"""An MLP of named layers, the model a ``ModelParallel`` JSON strategy splits: its
partitions' ``node_ids`` are these layers' names."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import jax
from flax import nnx

from bbjax._checks import check_count


class LayeredMLP(nnx.Module):
    """``dense0 … dense<k-1>`` (ReLU layers of ``widths`` units) then ``head``, a linear
    layer to ``classes`` logits, applied in that order to ``x`` of shape ``[batch,
    features]``. Raises :class:`~bbjax.errors.InvalidArgument` for a size that is not an
    integer >= 1."""

    def __init__(self, features: int, widths: Sequence[int], classes: int, *,
                 rngs: nnx.Rngs):
        sizes = [check_count("features", features),
                 *(check_count("widths", w) for w in widths)]
        for i, (a, b) in enumerate(pairwise(sizes)):
            setattr(self, f"dense{i}", nnx.Linear(a, b, rngs=rngs))
        self.head = nnx.Linear(sizes[-1], check_count("classes", classes), rngs=rngs)
        self.depth = len(sizes) - 1

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers' names, in the order they are applied."""
        return (*(f"dense{i}" for i in range(self.depth)), "head")

    def stage_items(self, names: Sequence[str]) -> list[Any]:
        """What :func:`~bbjax.strategies.model_parallel.split` applies for these layers:
        each ``dense<i>`` followed by its ReLU, ``head`` alone."""
        items: list[Any] = []
        for name in names:
            items += [name] if name == "head" else [name, jax.nn.relu]
        return items

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.depth):
            x = jax.nn.relu(getattr(self, f"dense{i}")(x))
        return self.head(x)
