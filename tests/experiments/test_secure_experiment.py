"""``FedAvgConfig.secure``: checked like every field; ``bbjax simulate --set secure=pet`` runs
FedAvg under PET masking and learns as the plain run does."""

from __future__ import annotations

import json

import pytest

from bbjax.cli import main
from bbjax.errors import ConfigError
from bbjax.experiments import FedAvgConfig

SMALL = ["--set", "num_clients=12", "--set", "clients_per_round=4", "--set", "local_steps=5",
         "--set", "max_client_size=60", "--set", "learning_rate=0.05", "--no-progress"]


@pytest.mark.parametrize("value", ["tls", None, True, "PET"])
def test_secure_must_be_none_or_pet(value):
    with pytest.raises(ConfigError) as caught:
        FedAvgConfig(secure=value)
    assert caught.value.field == "secure"
    assert "'none', 'pet'" in str(caught.value) and repr(value) in str(caught.value)


def test_secure_pet_takes_no_rule_and_parses_from_the_command_line(capsys):
    assert FedAvgConfig().replace(secure="pet").secure == "pet"
    with pytest.raises(ConfigError) as caught:
        FedAvgConfig(secure="pet", rule="median")
    assert caught.value.field == "secure" and "'median'" in str(caught.value)
    assert main(["simulate", "--set", "secure=pet", "--set", "rule=median"]) == 2
    assert "ConfigError: secure='pet'" in capsys.readouterr().err


@pytest.mark.slow
def test_bbjax_simulate_secure_pet_learns_like_the_plain_run(tmp_path, capsys):
    runs = {}
    for secure in ("none", "pet"):
        out = tmp_path / secure
        assert main(["simulate", "--rounds", "3", "--set", f"secure={secure}", *SMALL,
                     "--out", str(out)]) == 0
        runs[secure] = json.loads((out / "metrics.json").read_text())["rounds"]
    printed = capsys.readouterr().out
    assert "accuracy" in printed
    for plain, secure in zip(runs["none"], runs["pet"]):
        assert secure["participants"] == plain["participants"] == 4
        assert secure["unmasked"] == 1 and secure["included"] == 4 and secure["rejected"] == 0
        assert abs(secure["accuracy"] - plain["accuracy"]) <= 0.05
        assert abs(secure["train_loss"] - plain["train_loss"]) <= 0.05 * plain["train_loss"]
    assert runs["pet"][-1]["test_loss"] < runs["pet"][0]["test_loss"]
