"""The runnable examples run and do what they claim."""

from __future__ import annotations

import importlib.util
import pathlib

import chex
import jax
import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_on_one_node():
    losses = _load("quickstart").main(steps=40)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_export_train_step_example_agrees_with_plain_jax(capsys):
    _load("export_train_step").main(steps=20, batch=64)
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("max |param difference|"))
    assert float(line.rsplit(":", 1)[1]) < 1e-5


def test_single_node_fedavg_accuracy_rises():
    accuracies = _load("single_node_fedavg").main(rounds=6, local_steps=10)
    assert accuracies[-1] > accuracies[0] + 0.1


def test_multi_node_fedavg_rounds_close_and_learn():
    accuracies = _load("multi_node_fedavg").main(rounds=6, local_steps=10, seed=0)
    assert accuracies[-1] > accuracies[0]


def test_multi_node_round_averages_exactly_the_updates_that_arrived_weighted_by_size():
    example = _load("multi_node_fedavg")
    model, server, clients, _ = example.build_network(local_steps=3)
    duplicated = example.CLIENTS[0]
    copies = {example.FLAKY: 0, duplicated: 2}  # lose one client's update, duplicate another's
    log: dict = {}
    out = example.run_round(server, clients, lambda sender: copies.get(sender, 1), log)
    assert int(out["participants"]) == len(example.CLIENTS) - 1
    assert log["duplicate"] >= 1
    arrived = [p for p in example.CLIENTS if p != example.FLAKY]
    client_params = [model.call("params", clients[p].states["model"])[1] for p in arrived]
    sizes = np.array([clients[p].states["data"].x.shape[0] for p in arrived], np.float64)
    want = jax.tree.map(lambda *xs: np.tensordot(sizes / sizes.sum(), np.stack(xs), 1),
                        *client_params)
    got = model.call("params", server.states["model"])[1]
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_multi_node_round_with_a_robust_rule_applies_it_to_arrived_updates():
    from bbjax import aggregators
    from bbjax.modules import FedAvgRound
    example = _load("multi_node_fedavg")
    rule = aggregators.median()
    module = FedAvgRound(local_steps=2, rule=rule, num_clients=len(example.CLIENTS))
    model, server, clients, _ = example.build_network(local_steps=2, module=module)
    log: dict = {}
    out = example.run_round(server, clients, lambda s: 0 if s == example.FLAKY else 1, log)
    assert int(out["participants"]) == len(example.CLIENTS) - 1
    arrived = [p for p in example.CLIENTS if p != example.FLAKY]
    client_params = [model.call("params", clients[p].states["model"])[1] for p in arrived]
    want = jax.tree.map(lambda *xs: np.median(np.stack(xs), axis=0), *client_params)
    chex.assert_trees_all_close(model.call("params", server.states["model"])[1], want,
                                rtol=1e-5, atol=1e-6)


def test_simulate_fedavg_example_learns(tmp_path):
    history = _load("simulate_fedavg").main(rounds=15, num_clients=30, per_round=5,
                                            local_steps=10, plot=str(tmp_path / "f.png"))
    accuracy = history["accuracy"]
    assert np.isnan(accuracy[0]) and not np.isnan(accuracy[4])  # evaluated every 5 rounds
    assert accuracy[-1] > accuracy[4] and (tmp_path / "f.png").exists()
    assert np.all(history["participants"] == 5)
