"""chain: order, states, keys and extra inputs; and the registry's errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bbjax import aggregators, algorithms, compression, privacy
from bbjax.algorithms import Algorithm, chain
from bbjax.errors import AggregatorError, ConfigError, InvalidArgument


def probe(tag: float, inputs: tuple[str, ...] = ()) -> Algorithm:
    """Adds ``tag`` to the updates, counts its calls in its state and records the key and
    extra inputs it was given."""

    def init(params):
        return {"calls": jnp.int32(0), "seen": jnp.zeros(())}

    def update(updates, state, params=None, *, key=None, **extra):
        assert set(extra) <= set(inputs), (extra, inputs)
        seen = sum((jnp.asarray(v, jnp.float32).sum() for v in extra.values()), jnp.zeros(()))
        record = {"calls": state["calls"] + 1, "seen": seen}
        if key is not None:
            record["key"] = jax.random.key_data(key)
        return updates * 10 + tag, record

    return Algorithm(init, update, inputs)


def test_members_run_in_order_with_their_own_state():
    pipeline = chain(probe(1.0), probe(2.0), probe(3.0))
    state = pipeline.init(None)
    assert isinstance(state, tuple) and len(state) == 3
    out, state = pipeline.update(jnp.float32(0.5), state)
    assert float(out) == ((0.5 * 10 + 1) * 10 + 2) * 10 + 3
    out, state = jax.jit(pipeline.update)(out, state)
    assert [int(s["calls"]) for s in state] == [2, 2, 2]


def test_each_member_gets_its_split_of_the_key():
    key = jax.random.key(42)
    _, state = chain(probe(0.0), probe(0.0), probe(0.0)).update(
        jnp.zeros(()), chain(probe(0.0), probe(0.0), probe(0.0)).init(None), key=key)
    expected = jax.random.key_data(jax.random.split(key, 3))
    for i, s in enumerate(state):
        np.testing.assert_array_equal(s["key"], expected[i])
    assert len({tuple(np.asarray(s["key"]).tolist()) for s in state}) == 3
    _, state = chain(probe(0.0)).update(jnp.zeros(()), chain(probe(0.0)).init(None))
    assert "key" not in state[0]  # no key in, no key out


def test_extra_inputs_go_to_the_members_that_read_them():
    pipeline = chain(probe(0.0, ("a",)), probe(0.0), probe(0.0, ("a", "b")))
    assert pipeline.inputs == ("a", "b")
    _, state = pipeline.update(jnp.zeros(()), pipeline.init(None), a=jnp.float32(2),
                               b=jnp.float32(5))
    assert [float(s["seen"]) for s in state] == [2.0, 0.0, 7.0]
    with pytest.raises(InvalidArgument, match=r"\['c'\]"):
        pipeline.update(jnp.zeros(()), pipeline.init(None), c=1.0)


def test_chains_nest_and_vmap():
    inner = chain(probe(1.0, ("a",)), probe(2.0))
    outer = chain(inner, probe(3.0, ("b",)))
    assert outer.inputs == ("a", "b")
    keys = jax.random.split(jax.random.key(0), 4)
    x = jnp.arange(4, dtype=jnp.float32)
    states = jax.vmap(outer.init)(x)
    out, states = jax.jit(jax.vmap(lambda u, s, k, a, b: outer.update(u, s, key=k, a=a, b=b)))(
        x, states, keys, x, 2 * x)
    np.testing.assert_allclose(out, ((x * 10 + 1) * 10 + 2) * 10 + 3)
    np.testing.assert_allclose(states[0][0]["seen"], x)
    np.testing.assert_allclose(states[1]["seen"], 2 * x)
    for i in range(4):
        np.testing.assert_array_equal(
            states[1]["key"][i], jax.random.key_data(jax.random.split(keys[i], 2)[1]))


def test_bad_chains_and_states_are_refused():
    with pytest.raises(InvalidArgument, match="at least one"):
        chain()
    with pytest.raises(InvalidArgument, match="member 1 \\(Codec\\)"):
        chain(privacy.clip(1.0), compression.top_k(2))
    pipeline = chain(probe(0.0), probe(0.0))
    with pytest.raises(InvalidArgument, match="tuple of the 2"):
        pipeline.update(jnp.zeros(()), pipeline.init(None)[0])


def test_an_aggregator_is_a_chain_member():
    rule = aggregators.fedadam(eta=0.1)
    assert rule.inputs == ("weights", "mask") and rule.update is rule.algorithm.update
    pipeline = chain(privacy.clip(1.0), rule)
    params = {"w": jnp.zeros(3)}
    updates = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)}
    direct, chained = jax.jit(lambda u: (
        rule.update(privacy.clip(1.0).update(u, ())[0], rule.init(params), params,
                    weights=jnp.ones(4))[0],
        pipeline.update(u, pipeline.init(params), params, weights=jnp.ones(4))[0]))(updates)
    np.testing.assert_allclose(chained["w"], direct["w"], rtol=1e-6)


def test_unknown_names_and_hyperparameters_are_config_errors():
    with pytest.raises(ConfigError, match="unknown algorithm 'fedadamw'.*fedadam.*top_k") as err:
        algorithms.get("fedadamw")
    assert err.value.field == "name"
    with pytest.raises(ConfigError, match=r"fedadam has no hyperparameters \['etaa'\].*'eta'"):
        algorithms.get("fedadam", etaa=0.1)
    with pytest.raises(ConfigError, match="select_fraction.*fraction"):
        algorithms.get("select_fraction", num_clients=10)
    with pytest.raises(AggregatorError, match="eta must be > 0"):
        algorithms.get("fedadam", eta=-1.0)


def test_names_build_what_their_constructors_build():
    params = {"w": jnp.zeros(3)}
    rng = np.random.default_rng(5)
    updates = {"w": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}
    weights = jnp.asarray(rng.integers(1, 9, 6), jnp.float32)
    named = algorithms.get("fedadam", eta=0.3, beta_1=0.5)
    built = aggregators.fedadam(eta=0.3, beta_1=0.5)
    a, b = jax.jit(lambda u: (named.update(u, named.init(params), params, weights=weights),
                              built.update(u, built.init(params), params, weights=weights)))(
        updates)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    codec = algorithms.get("top_k", k=2, num_clients=6)
    out, residual = jax.jit(codec.update)(updates, codec.init(params))
    np.testing.assert_array_equal((np.asarray(out["w"]) != 0).sum(axis=1), 2)
    np.testing.assert_allclose(out["w"] + residual["w"], updates["w"], rtol=0, atol=0)
