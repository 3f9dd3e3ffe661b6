"""A run whose metrics or states become non-finite stops with ``DivergenceError`` carrying the
round and the History so far, or, when allowed, goes on and says where it diverged; History
keeps NaN and infinity and writes strict JSON."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bbjax
from bbjax.cli import main
from bbjax.components import Component, Role
from bbjax.dsl import Graph, Module
from bbjax.errors import DivergenceError
from bbjax.simulation import History, Peers, simulate

ZERO = jnp.zeros(1)
HOLDER = Component(Role.PROTOCOL, lambda key, v=ZERO: {"v": v},
                   {"value": lambda s: (s, s["v"]), "set": lambda s, v: ({"v": v}, ())},
                   "holder")
START = np.full((1, 1), 1e36, np.float32)  # x10 per round: 1e37, 1e38, then inf in round 2


class Grow(Module):
    """Multiplies the peer's value by 10 each round and outputs it as ``value``."""

    name = "grow"

    def body(self, g: Graph) -> None:
        v = g.slot("state").value() * 10.0
        g.slot("state").set(v)
        g.output("value", jnp.sum(v))


class GrowQuietly(Module):
    """As :class:`Grow`, but outputs ``min(value, 0)``: finite while the state overflows."""

    name = "grow_quietly"

    def body(self, g: Graph) -> None:
        v = g.slot("state").value() * 10.0
        g.slot("state").set(v)
        g.output("floor", jnp.minimum(jnp.sum(v), 0.0))


def _run(module: Module, rounds: int = 5, **kwargs) -> History:
    compiled = bbjax.Compiler().bind("state", HOLDER).compile(module)
    return simulate(compiled, {"self": Peers(1, init_args={"state": (START,)})}, rounds,
                    jax.random.PRNGKey(0), bindings={"state": HOLDER}, **kwargs)


def _strict(text: str) -> dict:
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_non_finite_metric_stops_the_run_at_its_round_with_the_history_so_far():
    with pytest.raises(DivergenceError, match=r"diverged at round 2 \(counting from 0\): "
                                              r"value is inf; 5 of 5 rounds ran") as caught:
        _run(Grow())  # one call runs all 5 rounds; the host sees them when it returns
    error = caught.value
    assert error.round == 2 and error.history.diverged_at == 2
    np.testing.assert_allclose(error.history["value"], [1e37, 1e38, np.inf, np.inf, np.inf],
                               rtol=1e-6)
    assert np.isinf(np.asarray(error.history.states["self"]["state"]["v"])).all()
    with pytest.raises(DivergenceError, match="3 of 5 rounds ran") as caught:
        _run(Grow(), rounds_per_call=1)  # the host checks after every round
    assert caught.value.history.rounds == 3


def test_non_finite_states_behind_finite_metrics_are_caught_after_the_call():
    with pytest.raises(DivergenceError, match=r"round 4 .*the states of self.state are "
                                              r"non-finite after round 4") as caught:
        _run(GrowQuietly())
    np.testing.assert_array_equal(caught.value.history["floor"], np.zeros(5))
    with pytest.raises(DivergenceError, match="round 2 ") as caught:
        _run(GrowQuietly(), rounds_per_call=1)
    assert caught.value.round == 2


def test_a_non_finite_evaluation_is_a_divergence():
    def evaluate(states):  # NaN once the value passes 3e37 (round 1); all else stays finite
        return {"check": jnp.where(states["self"]["state"]["v"].sum() > 3e37, jnp.nan, 0.0)}

    with pytest.raises(DivergenceError, match="round 1 .*check is nan") as caught:
        _run(Grow(), rounds=2, evaluate=evaluate)
    np.testing.assert_array_equal(caught.value.history["check"], [0.0, np.nan])


def test_allowed_divergence_runs_every_round_and_says_where_it_diverged(tmp_path):
    history = _run(Grow(), allow_divergence=True, config={"rounds": 5})
    assert history.rounds == 5 and history.diverged_at == 2
    assert history.summary().startswith("diverged at round 2 (counting from 0)")
    data = _strict(history.to_json(tmp_path / "m.json").read_text())
    assert data["diverged_at"] == 2 and data["config"] == {"rounds": 5}
    assert [row["value"] for row in data["rounds"]] == [
        pytest.approx(1e37, rel=1e-6), pytest.approx(1e38, rel=1e-6), None, None, None]


def test_history_keeps_nan_and_writes_null_for_nan_and_infinity(tmp_path):
    history = History({"loss": np.array([1.0, np.nan, np.inf, -np.inf])}, diverged_at=1)
    assert np.isnan(history["loss"][1]) and history.last() == {"loss": -np.inf}
    data = _strict(history.to_json(tmp_path / "m.json").read_text())
    assert [row["loss"] for row in data["rounds"]] == [1.0, None, None, None]
    assert history.summary() == "diverged at round 1 (counting from 0); last values: loss -inf"
    assert History({"loss": np.array([0.5])}).summary() == "loss 0.5"


CLI = ["simulate", "--rounds", "3", "--set", "num_clients=6", "--set", "clients_per_round=3",
       "--set", "max_client_size=60", "--set", "local_steps=2", "--set", "learning_rate=1e38",
       "--no-progress"]


def test_bbjax_simulate_exits_non_zero_on_divergence_and_writes_what_ran(tmp_path, capsys):
    assert main(CLI + ["--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("bbjax: error: DivergenceError: the run diverged at round 0 ")
    assert "--allow-divergence" in error and "\n" not in error
    data = _strict((tmp_path / "metrics.json").read_text())
    assert data["diverged_at"] == 0 and len(data["rounds"]) == 1


def test_bbjax_simulate_allow_divergence_finishes_and_reports_it(tmp_path, capsys):
    assert main(CLI + ["--out", str(tmp_path), "--allow-divergence"]) == 0
    assert "diverged at round 0 (counting from 0)" in capsys.readouterr().out
    data = _strict((tmp_path / "metrics.json").read_text())
    assert data["diverged_at"] == 0 and len(data["rounds"]) == 3


def test_entries_that_may_diverge_are_not_checked_but_metrics_and_others_are():
    compiled = bbjax.Compiler().bind("state", HOLDER).compile(GrowQuietly())
    population = {"self": Peers(1, init_args={"state": (START,)})}
    history = simulate(compiled, population, 5, jax.random.PRNGKey(0),
                       bindings={"state": HOLDER}, may_diverge=("self",))
    assert history.diverged_at is None and history.rounds == 5
    with pytest.raises(DivergenceError, match="value is inf"):
        _run(Grow(), may_diverge=("self",))  # a non-finite metric still stops the run
    for bad in ("self", ("server",)):
        with pytest.raises(bbjax.errors.SimulationError, match="may_diverge must be"):
            _run(Grow(), may_diverge=bad)
