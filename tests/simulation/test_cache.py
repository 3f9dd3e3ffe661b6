"""``simulate`` builds and compiles once: a second call with the same artifact, components
and shapes traces nothing, and History reports compile and run seconds apart."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bbjax
from bbjax.components import Component, Role
from bbjax.dsl import Graph, Module
from bbjax.simulation import Peers, clear_cache, simulate

TRACES = {"count": 0}


def counting_holder() -> Component:
    """A Protocol holding a vector; ``bump`` adds one to it and counts its traces."""

    def bump(state):
        TRACES["count"] += 1  # runs when traced, never in a compiled round
        return {"v": state["v"] + 1.0}, state["v"].sum()

    return Component(Role.PROTOCOL, lambda key, v=jnp.zeros(2): {"v": v}, {"bump": bump},
                     "counting_holder")


class Bump(Module):
    name = "bump"

    def body(self, g: Graph) -> None:
        nodes = g.peers("node")
        tick = g.send("tick", jnp.zeros((), jnp.float32), to=nodes)
        total = g.slot("state").bump(after=tick)
        g.output("total", total)


@pytest.fixture()
def compiled():
    clear_cache()
    # inline=False: the slot stays a call of bump, so a trace of the round traces bump
    yield bbjax.Compiler(inline=False).bind("state", counting_holder()).compile(Bump())
    clear_cache()


def _population(values: np.ndarray, cohort=None):
    return {"self": 1, "node": Peers(values.shape[0], init_args={"state": (values,)},
                                     cohort=cohort)}


def test_a_second_call_with_the_same_shapes_traces_and_compiles_nothing(compiled):
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(5, 2)).astype(np.float32) for _ in range(2))
    TRACES["count"] = 0
    first = simulate(compiled, _population(a), 3, jax.random.PRNGKey(0))
    traced = TRACES["count"]
    assert traced > 0 and first.compile_seconds > 0 and first.run_seconds > 0
    second = simulate(compiled, _population(b), 3, jax.random.PRNGKey(1))
    assert TRACES["count"] == traced  # the cached programs ran on the new data
    assert second.compile_seconds <= 0.05 * first.compile_seconds
    for history in (first, second):
        assert history.compile_seconds + history.run_seconds <= history.seconds
    # the data were arguments, not constants: the second run is b's, exactly
    np.testing.assert_allclose(second.states["node"]["state"]["v"], b + 3.0, rtol=1e-6)
    np.testing.assert_allclose(second["total"], [(b + r).sum(1).mean() for r in range(3)],
                               rtol=1e-5)


def test_other_shapes_or_settings_build_again(compiled):
    values = np.ones((5, 2), np.float32)
    TRACES["count"] = 0
    simulate(compiled, _population(values), 2, jax.random.PRNGKey(0))
    once = TRACES["count"]
    simulate(compiled, _population(np.ones((6, 2), np.float32)), 2, jax.random.PRNGKey(0))
    assert TRACES["count"] > once  # another peer count
    twice = TRACES["count"]
    simulate(compiled, _population(values, cohort=3), 2, jax.random.PRNGKey(0))
    assert TRACES["count"] > twice  # a cohort
    thrice = TRACES["count"]
    simulate(compiled, _population(values), 3, jax.random.PRNGKey(0))
    assert TRACES["count"] > thrice  # a chunk of 3 rounds is another program
    clear_cache()
    fourth = TRACES["count"]
    simulate(compiled, _population(values), 2, jax.random.PRNGKey(0))
    assert TRACES["count"] > fourth


def test_a_schedule_of_the_same_shape_reuses_the_program(compiled):
    values = np.zeros((5, 2), np.float32)
    TRACES["count"] = 0
    one = simulate(compiled, _population(values, np.array([[0, 1], [2, 3]])), 2,
                   jax.random.PRNGKey(0))
    traced = TRACES["count"]
    two = simulate(compiled, _population(values, np.array([[4, 3], [4, 0]])), 2,
                   jax.random.PRNGKey(0))
    assert TRACES["count"] == traced
    np.testing.assert_array_equal(one.states["node"]["state"]["v"][:, 0], [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(two.states["node"]["state"]["v"][:, 0], [1, 0, 0, 1, 2])


def test_history_json_carries_the_timing(compiled, tmp_path):
    import json
    history = simulate(compiled, _population(np.ones((3, 2), np.float32)), 2,
                       jax.random.PRNGKey(0))
    data = json.loads(history.to_json(tmp_path / "m.json").read_text())
    assert data["compile_seconds"] == history.compile_seconds > 0
    assert data["run_seconds"] == history.run_seconds > 0
