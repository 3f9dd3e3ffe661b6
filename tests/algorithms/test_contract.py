"""Every named algorithm satisfies the contract: init and update jit, and vmap over
independent servers gives what separate calls give."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from bbjax import algorithms
from bbjax.algorithms import Algorithm

from .common import SPECS, inputs, stack


def test_every_name_has_a_spec():
    assert set(algorithms.names()) == set(SPECS)


def _build(name):
    hyper, _, needs_key = SPECS[name]
    alg = algorithms.get(name, **hyper)
    assert isinstance(alg, Algorithm)
    return alg, needs_key


def _call(alg, needs_key, updates, state, params, key, extra):
    mine = {k: v for k, v in extra.items() if k in alg.inputs}
    return alg.update(updates, state, params, key=key if needs_key else None, **mine)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_init_and_update_jit_and_vmap_over_servers(name):
    alg, needs_key = _build(name)
    servers = [inputs(name, seed) for seed in (1, 2)]
    keys = jax.random.split(jax.random.key(3), 2)
    update = jax.jit(lambda u, s, p, k, e: _call(alg, needs_key, u, s, p, k, e))
    states = [jax.jit(alg.init)(p) for _, p, _ in servers]
    single = [update(u, s, p, k, e) for (u, p, e), s, k in zip(servers, states, keys)]
    batched = jax.jit(jax.vmap(lambda u, s, p, k, e: _call(alg, needs_key, u, s, p, k, e)))(
        stack(*[u for u, _, _ in servers]), stack(*states),
        None if servers[0][1] is None else stack(*[p for _, p, _ in servers]), keys,
        stack(*[e for _, _, e in servers]))
    chex.assert_trees_all_close(batched, stack(*single), rtol=1e-5, atol=1e-6)
    for (updates, params, _), (out, state) in zip(servers, single):
        assert jax.tree.structure(state) == jax.tree.structure(alg.init(params))
        if SPECS[name][1] == "selection":
            assert out.shape == updates.shape and out.dtype == bool
            assert not np.any(np.asarray(out) & ~np.asarray(updates))  # only candidates
        else:
            assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(out))


@pytest.mark.parametrize("name", [n for n, (_, _, key) in SPECS.items() if key])
def test_key_driven_algorithms_refuse_a_missing_key(name):
    alg, _ = _build(name)
    updates, params, extra = inputs(name, 4)
    with pytest.raises(algorithms_errors()):
        _call(alg, False, updates, alg.init(params), params, None, extra)


def algorithms_errors():
    from bbjax.errors import CompressionError, PrivacyError, SelectionError
    return (CompressionError, PrivacyError, SelectionError)
