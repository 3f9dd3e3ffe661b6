"""kernels.masked_sum: the pure-jnp reference and the Pallas kernel (interpret mode here,
natively behind the gpu marker) against sums of Python integers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels.masked_sum as km
from bbjax.errors import InvalidArgument


def _case(rng, p, m):
    """Orders in (2**32, 2**64) (the extremes included) and elements below them."""
    orders = [int(q) for q in rng.integers(2**33, 2**64 - 1, m, dtype=np.uint64, endpoint=True)]
    orders[0] = 2**64 - 1
    if m > 1:
        orders[1] = 2**32 + 1
    values = np.array([[int(rng.integers(0, q, dtype=np.uint64)) for q in orders] for _ in range(p)],
                      dtype=object)
    values[0, 0] = 2**64 - 2  # carries past 2**64
    if p > 1:
        values[1, 0] = 2**64 - 3
    return orders, values


def _split(x):
    wide = np.asarray(x, dtype=object).astype(np.uint64)
    return (jnp.asarray((wide & np.uint64(0xFFFFFFFF)).astype(np.uint32)),
            jnp.asarray((wide >> np.uint64(32)).astype(np.uint32)))


def _check(fn, p, m, seed):
    orders, values = _case(np.random.default_rng(seed), p, m)
    lo, hi = fn(*_split(values), *_split(orders))
    got = [int(a) + (int(b) << 32) for a, b in zip(np.asarray(lo), np.asarray(hi))]
    assert got == [sum(values[:, j]) % q for j, q in enumerate(orders)]


@pytest.mark.parametrize("p, m", [(1, 3), (2, 1), (7, 5), (33, 4)])
def test_reference_is_the_exact_modular_sum(p, m):
    _check(km.modular_sum_reference, p, m, seed=p * 100 + m)


@pytest.mark.parametrize("p, m", [(1, 3), (9, 130)])
def test_pallas_kernel_in_interpret_mode_is_the_exact_modular_sum(p, m):
    # rows=8, tile=128: 9 participants take two levels, 130 elements two tiles
    _check(lambda *a: km.modular_sum_pallas(*a, rows=8, tile=128, interpret=True), p, m, seed=p + m)


def test_selector_picks_the_kernel_on_accelerators(monkeypatch):
    calls = []
    monkeypatch.setattr(km, "modular_sum_pallas", lambda *a: calls.append("pallas"))
    monkeypatch.setattr(km, "modular_sum_reference", lambda *a: calls.append("jnp"))
    for backend in ("gpu", "tpu", "cpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        km.modular_sum(*(jnp.zeros((1, 1), jnp.uint32),) * 2, *(jnp.ones((1,), jnp.uint32),) * 2)
    assert calls == ["pallas", "pallas", "jnp"]


@pytest.mark.parametrize("shapes, dtype, what", [
    (((0, 3), (0, 3), (3,), (3,)), jnp.uint32, "P = 0"),
    (((2, 3), (2, 3), (4,), (4,)), jnp.uint32, r"\[P, M\]"),
    (((2, 3), (2, 3), (3,), (3,)), jnp.int32, "uint32"),
])
def test_bad_inputs_raise_invalid_argument(shapes, dtype, what):
    args = [jnp.zeros(s, dtype) for s in shapes]
    for fn in (km.modular_sum_reference, km.modular_sum_pallas):
        with pytest.raises(InvalidArgument, match=what):
            fn(*args)


@pytest.mark.gpu
def test_pallas_kernel_on_the_accelerator_is_the_exact_modular_sum():
    _check(km.modular_sum_pallas, 1000, 3000, seed=7)
