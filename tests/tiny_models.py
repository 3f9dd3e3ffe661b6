"""The tiny model the simulation, module and checkpoint tests share."""

import optax
from flax import nnx


class Linear(nnx.Module):
    """Logistic regression of 6 features onto 3 classes."""

    def __init__(self, rngs: nnx.Rngs):
        self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(x)


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
