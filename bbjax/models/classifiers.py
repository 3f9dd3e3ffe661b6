"""Logistic regression, a one-hidden-layer MLP and a small CNN as flax nnx modules.

Each maps a batch ``x`` to logits ``[batch, classes]`` and checks the trailing shape of
``x`` when traced: a mismatch raises :class:`~bbjax.errors.InvalidArgument` naming the
shape expected and the one given. Constructor sizes must be integers >= 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx

from bbjax._checks import check_count
from bbjax.errors import InvalidArgument


def _check_features(model: str, x: jax.Array, expected: tuple[int, ...]) -> None:
    if tuple(x.shape[1:]) != expected:
        raise InvalidArgument(f"{model} expects x of shape [batch, {', '.join(map(str, expected))}]"
                              f", got {list(x.shape)}")


class LogisticRegression(nnx.Module):
    """Multinomial logistic regression: ``x @ out.kernel + out.bias``, ``x`` of shape
    ``[batch, features]``."""

    def __init__(self, features: int, classes: int, *, rngs: nnx.Rngs):
        self.features = check_count("features", features)
        self.out = nnx.Linear(self.features, check_count("classes", classes), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _check_features("LogisticRegression", x, (self.features,))
        return self.out(x)


class MLP(nnx.Module):
    """One ReLU layer of ``hidden`` units, then a linear layer to ``classes`` logits:
    ``out(relu(hidden(x)))``, ``x`` of shape ``[batch, features]``."""

    def __init__(self, features: int, hidden: int, classes: int, *, rngs: nnx.Rngs):
        self.features = check_count("features", features)
        self.hidden = nnx.Linear(self.features, check_count("hidden", hidden), rngs=rngs)
        self.out = nnx.Linear(self.hidden.out_features, check_count("classes", classes),
                              rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _check_features("MLP", x, (self.features,))
        return self.out(jax.nn.relu(self.hidden(x)))


class CNN(nnx.Module):
    """Per entry of ``channels``: a 3x3 convolution (``SAME`` padding) to that many
    channels, ReLU and 2x2 max pooling (stride 2); then a linear layer from the flattened
    maps to ``classes`` logits. ``image_shape`` is ``(height, width, channels)``; ``x`` is
    ``[batch, *image_shape]`` or flat, ``[batch, height * width * channels]``. Each side
    must be at least ``2 ** len(channels)``."""

    def __init__(self, image_shape: Sequence[int], classes: int, *,
                 channels: Sequence[int] = (32, 64), rngs: nnx.Rngs):
        if isinstance(image_shape, (str, bytes)) or not isinstance(image_shape, Sequence) \
                or len(image_shape) != 3:
            raise InvalidArgument(f"image_shape must be (height, width, channels), got "
                                  f"{image_shape!r}")
        self.image_shape = tuple(check_count("image_shape", d) for d in image_shape)
        widths = [check_count("channels", c) for c in channels]
        if not widths:
            raise InvalidArgument("channels must name at least one convolution, got ()")
        height, width, depth = self.image_shape
        if min(height, width) < 2 ** len(widths):
            raise InvalidArgument(f"image_shape {self.image_shape} is too small for "
                                  f"{len(widths)} 2x2 poolings: each side needs at least "
                                  f"{2 ** len(widths)}")
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs)
                               for a, b in zip([depth, *widths[:-1]], widths)])
        flat = (height >> len(widths)) * (width >> len(widths)) * widths[-1]
        self.out = nnx.Linear(flat, check_count("classes", classes), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 2 and x.shape[1] == math.prod(self.image_shape):
            x = x.reshape(x.shape[0], *self.image_shape)
        _check_features("CNN", x, self.image_shape)
        for conv in self.convs:
            x = nnx.max_pool(jax.nn.relu(conv(x)), (2, 2), strides=(2, 2))
        return self.out(x.reshape(x.shape[0], -1))
