"""The ``bbjax simulate`` command and its configurations."""

from __future__ import annotations

import json

import pytest

from bbjax.cli import main
from bbjax.errors import ConfigError
from bbjax.experiments import CONFIGS, FedAvgConfig, load_config


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


@pytest.mark.slow  # ~30 s of compiling; the median rule's own tests are in tests/modules
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
