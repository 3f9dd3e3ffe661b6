"""``bbjax train STRATEGY.json``: every runnable example runs briefly and writes the History
files of ``bbjax simulate``; bad fields fail with one line and status 2 (PopulationBased's
runs: tests/strategies/pbt/test_pbt_config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bbjax.cli import main
from bbjax.strategies import config as sc

EXAMPLES = Path(__file__).parents[2] / "examples" / "strategies"
OVERRIDES = {"rounds": 2, "training.max_client_size": 200, "training.local_steps": 1,
             "training.batch_size": 5, "training.learning_rate": 0.05}
"""Small runs (test_federated runs the same federated programs: one compilation)."""
SMALL = ["--no-progress", *[a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")]]
RUNNABLE = ["federated_fedavg", "data_parallel_decentralized",
            *[pytest.param(name, marks=pytest.mark.slow)
              for name in ("local", "federated_fedprox", "federated_fedyogi",
                           "data_parallel_all_reduce", "data_parallel_parameter_server")]]


@pytest.mark.parametrize("name", RUNNABLE)
def test_runnable_examples_train_and_write_the_history(name, tmp_path, capsys):
    path = EXAMPLES / f"{name}.json"
    out = tmp_path / "run"
    assert main(["train", str(path), *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"bbjax train {path}" in printed and "wrote" in printed
    record = json.loads((out / "metrics.json").read_text())
    strategy = sc.load(path, OVERRIDES)
    assert record["config"] == json.loads(json.dumps(strategy.to_json()))
    assert [row["round"] for row in record["rounds"]] == [1, 2]
    accuracy = [row["accuracy"] for row in record["rounds"]]
    every = strategy.training.eval_every
    measured = [a for r, a in enumerate(accuracy, 1) if r % every == 0 or r == 2]
    assert measured and all(0.0 <= a <= 1.0 + 1e-6 for a in measured)  # float32 sums
    assert (out / "metrics.csv").read_text().startswith("round,")
    if name == "data_parallel_decentralized":
        assert record["rounds"][-1]["consensus_distance"] >= 0.0
    if name == "data_parallel_parameter_server":
        assert max(row["staleness"] for row in record["rounds"]) <= 2


@pytest.mark.slow
def test_federated_training_learns(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(EXAMPLES / "federated_fedavg.json"), "--rounds", "8",
                 "--no-progress", "--set", "training.max_client_size=40", "--set",
                 "training.local_steps=2", "--set", "training.learning_rate=0.1",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "metrics.json").read_text())["rounds"]
    loss = np.array([row["test_loss"] for row in rows])
    assert loss[-1] < loss[0] - 0.1


@pytest.mark.slow
def test_a_diverging_run_exits_1_and_still_writes_its_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", str(EXAMPLES / "federated_fedavg.json"), *SMALL,
                   "--set", "training.learning_rate=1e300", "--out", str(out)])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bbjax: error: DivergenceError") and "\n" not in err
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("argv, field", [
    (["--set", "aggregation.mu=-1"], "aggregation.mu"),
    (["--set", "client_selection.fraction=0"], "client_selection.fraction"),
    (["--set", "training.model=cnn"], "training.model"),
    (["--set", "nonsense"], "--set"),
])
def test_bad_fields_exit_2_with_one_line(argv, field, capsys):
    status = main(["train", str(EXAMPLES / "federated_fedprox.json"), *argv])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bbjax: error: ConfigError") and field in err and "\n" not in err


def test_a_missing_file_exits_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.json")]) == 2
    assert "cannot read strategy file" in capsys.readouterr().err


@pytest.mark.parametrize("changes, field", [
    (["--set", "num_replicas=1"], "aggregation.topology"),
    (["--set", "num_replicas=5", "--set", "aggregation.topology=random_regular",
      "--set", "aggregation.k=3"], "aggregation.topology"),
    (["--set", "aggregation.topology=torus", "--set", "aggregation.rows=3"], "aggregation.rows"),
])
def test_a_topology_the_replicas_cannot_form_exits_2(changes, field, capsys):
    assert main(["train", str(EXAMPLES / "data_parallel_decentralized.json"), *changes]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bbjax: error: ConfigError") and field in err and "\n" not in err
