"""Tiny classifiers to start from: flax nnx modules and their loss.

Each is an ``nnx.Module`` that maps a batch of examples to class logits, ready for
:func:`bbjax.components.flax_model` (or ``scaffold_model``, ``fedprox_model``) together
with :func:`cross_entropy`::

    model = flax_model(MLP(60, 64, 10, rngs=nnx.Rngs(0)), optax.sgd(0.05), cross_entropy)
"""

from bbjax.models.classifiers import CNN, MLP, LogisticRegression
from bbjax.models.losses import cross_entropy

__all__ = ["CNN", "MLP", "LogisticRegression", "cross_entropy"]
