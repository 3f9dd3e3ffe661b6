"""Functions the round-trip tests export: models, losses and training steps."""

from __future__ import annotations

import jax
import optax
from flax import linen, nnx

from bbjax.models import cross_entropy


class MLP(nnx.Module):
    def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class CNN(linen.Module):
    max_pool: bool = True

    @linen.compact
    def __call__(self, x, train: bool = False):
        x = linen.Conv(8, (3, 3))(x)
        x = linen.BatchNorm(use_running_average=not train)(x)
        x = jax.nn.relu(x)
        pool = linen.max_pool if self.max_pool else linen.avg_pool
        x = pool(x, (2, 2), (2, 2))
        x = linen.Conv(16, (3, 3), padding="VALID")(x)
        x = linen.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = linen.LayerNorm()(x)
        return linen.Dense(10)(x)


class Block(nnx.Module):
    """A pre-norm transformer block over token embeddings."""

    def __init__(self, vocab: int, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.up = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.down = nnx.Linear(4 * dim, dim, rngs=rngs)
        self.head = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        h = self.norm1(x)
        x = x + self.attn(h, h, h)
        x = x + self.down(jax.nn.gelu(self.up(self.norm2(x))))
        return self.head(x)


def nnx_train_step(module: nnx.Module, optimizer: optax.GradientTransformation):
    """``step(params, opt_state, x, y) -> (params, opt_state, loss)`` for an nnx module."""
    graphdef, _ = nnx.split(module, nnx.Param)

    def step(params, opt_state, x, y):
        def loss_fn(p):
            return cross_entropy(nnx.merge(graphdef, p)(x), y)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def local_training(module: nnx.Module, optimizer: optax.GradientTransformation, steps: int):
    """``train(params, opt_state, xs, ys)``: ``steps`` SGD steps under ``lax.scan``."""
    step = nnx_train_step(module, optimizer)

    def train(params, opt_state, xs, ys):
        def body(carry, batch):
            p, s = carry
            p, s, loss = step(p, s, *batch)
            return (p, s), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
        return params, opt_state, losses

    return train
