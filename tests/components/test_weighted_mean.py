"""The weighted-mean Aggregator against a float64 numpy reference."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.components import Status, weighted_mean

from bbjax.errors import ComponentError

CAPACITY = 3
MAX_WEIGHT = 100.0
EXAMPLE = {"w": jnp.zeros((2, 3)), "b": jnp.zeros((3,))}
AGG = weighted_mean(CAPACITY, EXAMPLE, max_weight=MAX_WEIGHT)
CONTRIBUTE = jax.jit(functools.partial(AGG.call, "contribute"))
AGGREGATE = jax.jit(functools.partial(AGG.call, "aggregate"))


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstack(tree, n):
    return [jax.tree.map(lambda leaf, i=i: leaf[i], tree) for i in range(n)]


class Reference:
    """FedAvg in float64: replace on repeat, reject bad weight / peer / full at contribute and
    non-finite tensors at aggregate."""

    def __init__(self):
        self.buffer = {}
        self.rejected = 0

    def contribute(self, peer, tensor, weight):
        if peer < 0:
            status = Status.INVALID_PEER
        elif not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
            status = Status.INVALID_WEIGHT
        elif peer not in self.buffer and len(self.buffer) == CAPACITY:
            status = Status.FULL
        else:
            self.buffer[peer] = (tensor, weight)
            return Status.OK
        self.rejected += 1
        return status

    def aggregate(self):
        kept = [(t, w) for t, w in self.buffer.values()
                if all(np.isfinite(t[k]).all() for k in EXAMPLE)]
        self.rejected += len(self.buffer) - len(kept)
        total = sum(w for _, w in kept)
        if not kept:
            result = {k: np.zeros(v.shape) for k, v in EXAMPLE.items()}
        else:
            result = {k: sum(w * np.asarray(t[k], np.float64) for t, w in kept) / total
                      for k in EXAMPLE}
        self.buffer = {}
        return result, total, Status.EMPTY if not kept else Status.OK


def _tensor(seed, poison=None):
    rng = np.random.default_rng(seed)
    tensor = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in EXAMPLE.items()}
    if poison is not None:
        tensor["w"][1, seed % 3] = poison
    return tensor


contribution = st.tuples(
    st.integers(-1, 4),
    st.integers(0, 2**16),
    st.sampled_from([-1.0, 0.0, 0.5, 1.0, 3.0, 10.0, 100.0, 250.0, math.nan, math.inf]),
    st.sampled_from([None, None, None, math.nan, math.inf, -math.inf]),
)


@settings(max_examples=30, deadline=None)
@given(rounds=st.lists(st.lists(contribution, max_size=7), min_size=1, max_size=3))
def test_matches_the_float64_reference(rounds):
    state, ref = AGG.init(jax.random.key(0)), Reference()
    for contributions in rounds:
        for peer, seed, weight, poison in contributions:
            tensor = _tensor(seed, poison)
            state, out = CONTRIBUTE(state, peer, tensor, weight)
            assert out == ()
            assert int(state.status) == ref.contribute(peer, tensor, weight)
            assert int(state.num_rejected) == ref.rejected
        state, (result, total) = AGGREGATE(state)
        want, want_total, want_status = ref.aggregate()
        assert int(state.status) == want_status
        assert int(state.num_rejected) == ref.rejected
        np.testing.assert_allclose(total, want_total, rtol=1e-6)
        for k in EXAMPLE:
            assert result[k].dtype == jnp.float32
            np.testing.assert_allclose(result[k], want[k], rtol=1e-5, atol=1e-5)
        assert (np.asarray(state.peers) == -1).all()


def test_repeat_replaces_and_aggregate_clears():
    state = AGG.init(jax.random.key(0))
    ones = jax.tree.map(jnp.ones_like, EXAMPLE)
    state, _ = CONTRIBUTE(state, 7, jax.tree.map(lambda a: 5 * a, ones), 1)
    state, _ = CONTRIBUTE(state, 7, ones, 2)
    state, _ = CONTRIBUTE(state, 8, jax.tree.map(lambda a: 4 * a, ones), 1)
    state, (result, total) = AGGREGATE(state)
    assert float(total) == 3.0
    np.testing.assert_allclose(result["w"], np.full((2, 3), 2.0))
    state, (result, total) = AGGREGATE(state)
    assert float(total) == 0.0 and int(state.status) == Status.EMPTY
    np.testing.assert_array_equal(result["b"], np.zeros(3))


def test_a_non_finite_contribution_is_rejected_and_does_not_leak_into_the_next_round():
    state = AGG.init(jax.random.key(0))
    nan = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), EXAMPLE)
    state, _ = CONTRIBUTE(state, 1, nan, 1.0)
    assert int(state.status) == Status.OK  # buffered; rejected when aggregated
    state, (result, total) = AGGREGATE(state)
    assert int(state.status) == Status.EMPTY and int(state.num_rejected) == 1
    assert float(total) == 0.0
    np.testing.assert_array_equal(result["b"], np.zeros(3))
    state, _ = CONTRIBUTE(state, 2, jax.tree.map(jnp.ones_like, EXAMPLE), 1.0)
    state, (result, _) = AGGREGATE(state)
    np.testing.assert_array_equal(result["b"], np.ones(3))


def test_a_weight_over_max_weight_is_rejected_at_contribute():
    state = AGG.init(jax.random.key(0))
    state, _ = CONTRIBUTE(state, 1, _tensor(1), MAX_WEIGHT * 1.01)
    assert int(state.status) == Status.INVALID_WEIGHT and int(state.num_rejected) == 1
    state, _ = CONTRIBUTE(state, 1, _tensor(1), MAX_WEIGHT)
    assert int(state.status) == Status.OK


def test_vmap_over_a_stack_of_aggregators():
    peers = 5
    states = jax.vmap(AGG.init)(jax.random.split(jax.random.key(0), peers))
    tensors = [_stack([_tensor(10 * p + i) for p in range(peers)]) for i in range(2)]
    weights = jnp.arange(peers, dtype=jnp.float32)  # peer 0 contributes a rejected 0
    contribute = jax.jit(jax.vmap(functools.partial(AGG.call, "contribute")))
    states, _ = contribute(states, jnp.zeros(peers, jnp.int32), tensors[0], weights)
    states, _ = contribute(states, jnp.ones(peers, jnp.int32), tensors[1], weights + 1)
    states, (results, totals) = jax.jit(jax.vmap(functools.partial(AGG.call, "aggregate")))(states)
    for p, (result, total) in enumerate(zip(_unstack(results, peers), np.asarray(totals))):
        state = AGG.init(jax.random.key(1))
        state, _ = CONTRIBUTE(state, 0, _unstack(tensors[0], peers)[p], weights[p])
        state, _ = CONTRIBUTE(state, 1, _unstack(tensors[1], peers)[p], weights[p] + 1)
        _, (want, want_total) = AGGREGATE(state)
        assert total == want_total
        jax.tree.map(np.testing.assert_allclose, result, want)
    np.testing.assert_array_equal(states.num_rejected, [1, 0, 0, 0, 0])


def test_wrong_tensor_is_a_component_error():
    state = AGG.init(jax.random.key(0))
    with pytest.raises(ComponentError, match=r"tensor leaf \['w'\] has shape \(3, 2\)") as info:
        AGG.call("contribute", state, 0, {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}, 1.0)
    assert info.value.method == "contribute" and info.value.role == "aggregator"
    with pytest.raises(ComponentError, match="tensor has tree structure"):
        CONTRIBUTE(state, 0, {"w": jnp.zeros((2, 3))}, 1.0)


@pytest.mark.parametrize("capacity", [0, -2, 1.5, True])
def test_bad_capacity(capacity):
    with pytest.raises(ComponentError, match="capacity must be an integer >= 1"):
        weighted_mean(capacity, EXAMPLE)


@pytest.mark.parametrize("max_weight", [0, -1.0, math.nan, math.inf])
def test_bad_max_weight(max_weight):
    with pytest.raises(ComponentError, match="max_weight must be a finite number > 0"):
        weighted_mean(CAPACITY, EXAMPLE, max_weight=max_weight)
