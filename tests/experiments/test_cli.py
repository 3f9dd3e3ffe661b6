"""History's files and plot; the ``bbjax simulate`` command and its configurations."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bbjax.cli import main
from bbjax.errors import ConfigError
from bbjax.simulation import History
from bbjax.experiments import CONFIGS, FedAvgConfig, load_config


@pytest.fixture
def history():
    return History({"train_loss": np.array([2.0, 1.5, 1.0]),
                    "accuracy": np.array([np.nan, 0.5, 0.75])}, seconds=1.5,
                   config={"rounds": 3})


def test_history_rows_last_csv_and_json(history, tmp_path):
    assert history.rounds == 3
    assert history.last() == {"train_loss": 1.0, "accuracy": 0.75}
    with history.to_csv(tmp_path / "m.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0] == {"round": "1", "train_loss": "2.0", "accuracy": ""}
    assert rows[2]["accuracy"] == "0.75"
    data = json.loads(history.to_json(tmp_path / "m.json").read_text())
    assert data["config"] == {"rounds": 3} and data["seconds"] == 1.5
    assert data["diverged_at"] is None
    assert data["rounds"][0] == {"round": 1, "train_loss": 2.0, "accuracy": None}
    assert history.summary() == "accuracy 0.75  train_loss 1"


def test_history_plot_writes_a_png(history, tmp_path):
    history.plot(tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_configurations_load_by_name_or_json_file(tmp_path):
    assert load_config("fedavg-synthetic") == CONFIGS["fedavg-synthetic"] == FedAvgConfig()
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"rounds": 7, "model": "mlp"}))
    assert load_config(str(path)) == FedAvgConfig(rounds=7, model="mlp")
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_config(str(path))
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="no configuration named 'nope'"):
        load_config("nope")


def test_bbjax_simulate_writes_metrics_and_plot_and_learns(tmp_path, capsys):
    status = main(["simulate", "--rounds", "12", "--set", "num_clients=20",
                   "--set", "clients_per_round=5", "--set", "learning_rate=0.05",
                   "--out", str(tmp_path), "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "wrote" in printed
    rows = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=_refuse)["rounds"]
    assert len(rows) == 12 and all(r["participants"] == 5 for r in rows)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    assert rows[-1]["accuracy"] > rows[0]["accuracy"]
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "metrics.png").exists()


def _refuse(constant):
    raise AssertionError(f"not strict JSON: {constant}")


def test_bbjax_simulate_with_a_robust_rule(tmp_path):
    assert main(["simulate", "median-synthetic", "--rounds", "2", "--set", "num_clients=12",
                 "--set", "clients_per_round=4", "--out", str(tmp_path), "--no-progress"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["simulate", "nope"], "no configuration named 'nope'"),
    (["simulate", "--set", "rounds"], "--set expects FIELD=VALUE"),
    (["simulate", "--set", "round=3"], "unknown configuration fields"),
])
def test_bbjax_simulate_reports_bad_arguments(argv, message, capsys):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("bbjax: error: ConfigError: ") and message in error


def test_bbjax_simulate_lists_configurations(capsys):
    assert main(["simulate", "--list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in CONFIGS)
