"""Every ``FedAvgConfig`` field is checked when the configuration is made, from Python, a
JSON file, ``--set`` or ``--rounds``, before any data is generated or anything compiled."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bbjax.cli import main
from bbjax.data import FederatedData, save_npz
from bbjax.errors import ConfigError
from bbjax.experiments import fedavg
from bbjax.experiments import FedAvgConfig, build, load_config

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field, value, allowed", [
    ("dataset", "mnist", "'synthetic', 'synthetic_iid' or the path of an existing .npz file"),
    ("dataset", "missing.npz", "the path of an existing .npz file"),
    ("dataset", 3, "'synthetic', 'synthetic_iid'"),
    ("alpha", -0.5, "a finite number >= 0"),
    ("alpha", NAN, "a finite number >= 0"),
    ("beta", "1", "a finite number >= 0"),
    ("beta", True, "a finite number >= 0"),
    ("num_clients", 0, "an integer >= 1"),
    ("num_clients", 10.0, "an integer >= 1"),
    ("max_client_size", -3, "an integer >= 1"),
    ("test_fraction", 0.0, "in (0, 1)"),
    ("test_fraction", 1, "in (0, 1)"),
    ("test_fraction", NAN, "in (0, 1)"),
    ("clients_per_round", 0, "an integer >= 1"),
    ("rounds", "abc", "an integer >= 1"),
    ("rounds", None, "an integer >= 1"),
    ("local_steps", 0, "an integer >= 1"),
    ("batch_size", 2.5, "an integer >= 1"),
    ("learning_rate", NAN, "a finite number > 0"),
    ("max_weight", 0, "a finite number > 0"),
    ("max_weight", NAN, "a finite number > 0"),
    ("max_weight", "100", "a finite number > 0"),
    ("learning_rate", INF, "a finite number > 0"),
    ("learning_rate", "nan", "a finite number > 0"),
    ("learning_rate", 0, "a finite number > 0"),
    ("model", "resnet", "one of 'logreg', 'mlp'"),
    ("model", None, "one of 'logreg', 'mlp'"),
    ("hidden", 0, "an integer >= 1"),
    ("rule", "mode", "one of 'fedavg', "),
    ("rule", 1, "or null"),
    ("eval_every", False, "an integer >= 1"),
    ("seed", -1, "an integer in [0, 2**32)"),
    ("seed", 2**32, "an integer in [0, 2**32)"),
])
def test_each_field_is_checked_and_the_error_names_field_value_and_what_is_allowed(
        field, value, allowed):
    with pytest.raises(ConfigError) as caught:
        FedAvgConfig(**{field: value})
    assert caught.value.field == field
    message = str(caught.value)
    assert message.startswith(f"{field} must be ") and allowed in message
    assert message.endswith(f"got {value!r}")


def test_a_cohort_larger_than_the_population_is_refused():
    with pytest.raises(ConfigError, match=r"clients_per_round must be at most num_clients "
                                          r"\(20\), got 21") as caught:
        FedAvgConfig(num_clients=20, clients_per_round=21)
    assert caught.value.field == "clients_per_round"


def test_valid_values_are_kept_as_int_and_float(tmp_path):
    path = tmp_path / "clients.npz"
    path.touch()
    config = FedAvgConfig(alpha=1, learning_rate=1, rule="krum", dataset=str(path))
    assert isinstance(config.alpha, float) and isinstance(config.learning_rate, float)
    assert config.rule == "krum" and config.dataset == str(path)
    assert FedAvgConfig().replace(rule=None, rounds=3).rounds == 3


def test_unknown_fields_are_named():
    with pytest.raises(ConfigError, match=r"unknown configuration fields \['round'\]; known: "):
        FedAvgConfig().replace(round=3)


def test_a_json_file_is_checked_field_by_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"rounds": 7, "learning_rate": NaN}')  # Python's json reads NaN
    with pytest.raises(ConfigError, match="learning_rate must be a finite number > 0, got nan"):
        load_config(str(path))
    path.write_text(json.dumps({"rounds": 7, "local_steps": 0}))
    with pytest.raises(ConfigError, match="local_steps must be an integer >= 1, got 0"):
        load_config(str(path))


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if a synthetic dataset is generated."""
    def refuse(*args, **kwargs):
        raise AssertionError("data was generated before the configuration was checked")
    monkeypatch.setattr(fedavg, "synthetic", refuse)
    monkeypatch.setattr(fedavg, "synthetic_iid", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--set", "learning_rate=nan"], "learning_rate must be a finite number > 0, got 'nan'"),
    (["--set", "learning_rate=NaN"], "learning_rate must be a finite number > 0, got nan"),
    (["--set", "learning_rate=-Infinity"], "learning_rate must be a finite number > 0, got -inf"),
    (["--set", "local_steps=0"], "local_steps must be an integer >= 1, got 0"),
    (["--set", "rounds=abc"], "rounds must be an integer >= 1, got 'abc'"),
    (["--rounds", "0"], "rounds must be an integer >= 1, got 0"),
    (["--set", "rule=mode"], "rule must be one of 'fedavg', "),
    (["--set", "dataset=nope"], "dataset must be 'synthetic', 'synthetic_iid' or the path"),
])
def test_bbjax_simulate_refuses_a_bad_field_before_generating_data(argv, message, no_data,
                                                                    capsys):
    assert main(["simulate", "--no-progress", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("bbjax: error: ConfigError: ") and message in error
    assert error.count("\n") == 1


def test_build_refuses_clients_left_without_training_examples():
    with pytest.raises(ConfigError, match="leaves client 0 \\(of 1 examples\\) no training "
                                          "examples") as caught:
        build(FedAvgConfig(num_clients=3, clients_per_round=2, max_client_size=1))
    assert caught.value.field == "test_fraction"


def test_build_refuses_an_npz_file_of_another_client_count(tmp_path):
    rng = np.random.default_rng(0)
    data = FederatedData.from_clients([rng.normal(size=(20, 4)).astype(np.float32)] * 3,
                                      [rng.integers(0, 2, 20).astype(np.int32)] * 3)
    save_npz(tmp_path / "three.npz", data)
    config = FedAvgConfig(dataset=str(tmp_path / "three.npz"), num_clients=5, clients_per_round=2)
    with pytest.raises(ConfigError, match="num_clients must match the 3 clients of .*three.npz, "
                                          "got 5") as caught:
        build(config)
    assert caught.value.field == "num_clients"


def test_max_weight_rejects_clients_reporting_more_examples():
    config = FedAvgConfig(num_clients=6, clients_per_round=3, local_steps=1, rounds=1,
                          max_client_size=40, max_weight=1.0)  # every client has > 1 example
    history = build(config).run()
    assert history["rejected"].tolist() == [3.0] and history["train_loss"].tolist() == [0.0]
    assert FedAvgConfig(max_weight=None).max_weight is None
    assert FedAvgConfig(max_weight=1000).max_weight == 1000.0
