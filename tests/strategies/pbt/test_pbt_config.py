"""The PopulationBased JSON: search spaces, the RayTune explore and the local task's
fields round trip and fail naming their path; ``build(...).run()`` and ``bbjax train``
run it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bbjax.cli import main
from bbjax.errors import ConfigError
from bbjax.strategies import config as sc
from bbjax.strategies.build import build
from bbjax.strategies.pbt import PbtHistory

EXAMPLE = Path(__file__).parents[3] / "examples" / "strategies" / "pbt.json"
FEDERATED_EXAMPLE = EXAMPLE.with_name("pbt_federated.json")
BASE = {"type": "PopulationBased", "population_size": 4, "generations": 2,
        "exploit": {"method": "Truncation", "fraction": 0.25},
        "explore": {"method": "RayTune", "resample_probability": 0.5, "factors": [0.5, 2.0]},
        "search_space": {"learning_rate": {"type": "Float", "low": 0.01, "high": 0.3},
                         "momentum": {"type": "Categorical", "choices": [0, 0.5, 0.9]},
                         "weight_decay": {"type": "Int", "low": 0, "high": 0}},
        "num_clients": 3}
FEDERATED = {**{k: v for k, v in BASE.items() if k != "search_space"},
             "task": "federated", "num_clients": 6,
             "search_space": {"client_learning_rate": {"type": "Float", "low": 0.01,
                                                       "high": 0.1}},
             "federated": {"clients_per_round": 3, "rounds": 2, "rule": "fedyogi"}}
SMALL = {"population_size": 4, "generations": 3, "training.max_client_size": 60,
         "training.local_steps": 2, "training.hidden": 8}


def _with(path: str, value, base=BASE):
    out = json.loads(json.dumps(base))
    *head, last = path.split(".")
    node = out
    for name in head:
        node = node[name]
    node[last] = value
    return out


def test_the_extras_parse_to_typed_values_and_round_trip():
    s = sc.parse(BASE)
    assert s.search_space["learning_rate"] == sc.Float(0.01, 0.3)
    assert s.search_space["momentum"] == sc.Categorical((0, 0.5, 0.9))
    assert s.search_space.names == ("learning_rate", "momentum", "weight_decay")
    assert s.explore == sc.RayTune(0.5, (0.5, 2.0)) and s.task == "local"
    assert sc.parse(s.to_json()) == s and sc.loads(json.dumps(s.to_json())) == s
    assert sc.parse(json.loads(json.dumps(s.to_json()))).to_json() == s.to_json()
    plain = sc.parse({k: v for k, v in BASE.items() if k not in ("search_space",
                                                                  "num_clients")})
    assert plain.search_space == sc.SearchSpace({"learning_rate": sc.Float(0.001, 0.5)})
    assert sc.parse({**BASE, "explore": {"method": "RayTune"}}).explore == sc.RayTune()
    assert sc.SearchSpace([("a", sc.Int(1, 2))]) == sc.SearchSpace({"a": sc.Int(1, 2)})


@pytest.mark.parametrize("value, field", [
    (_with("search_space", {}), "search_space"),
    (_with("search_space", []), "search_space"),
    (_with("search_space.learning_rate", {"type": "Float", "low": 1.0, "high": 0.5}),
     "search_space.learning_rate.high"),
    (_with("search_space.learning_rate.low", float("nan")), "search_space.learning_rate.low"),
    (_with("search_space.learning_rate.type", "Log"), "search_space.learning_rate.type"),
    (_with("search_space.learning_rate", {"type": "Float", "low": 0.1}),
     "search_space.learning_rate.high"),
    (_with("search_space.weight_decay.high", 2**24 + 1), "search_space.weight_decay.high"),
    (_with("search_space.weight_decay.low", 0.5), "search_space.weight_decay.low"),
    (_with("search_space.momentum.choices", []), "search_space.momentum.choices"),
    (_with("search_space.momentum.choices", [0.5, 0.5]), "search_space.momentum.choices[1]"),
    (_with("search_space.momentum.choices", [None]), "search_space.momentum.choices[0]"),
    (_with("search_space.momentum.choices", ["fast"]), "search_space.momentum.choices"),
    (_with("search_space.dropout", {"type": "Float", "low": 0, "high": 1}),
     "search_space.dropout"),
    (_with("explore.factors", [0.8]), "explore.factors"),
    (_with("explore.factors", [0.8, -1.2]), "explore.factors[1]"),
    (_with("explore.resample_probability", 1.5), "explore.resample_probability"),
    (_with("task", "remote"), "task"),
    (_with("num_clients", 0), "num_clients"),
    (_with("search_space.momentum.extra", 1), "search_space.momentum.extra"),
    (_with("federated", {"rounds": 2}), "federated"),
    (_with("federated.clients_per_round", 7, FEDERATED), "federated.clients_per_round"),
    (_with("federated.rule", "fedprox", FEDERATED), "federated.rule"),
    (_with("federated.server_learning_rate", 0, FEDERATED), "federated.server_learning_rate"),
    (_with("search_space.learning_rate", {"type": "Float", "low": 0, "high": 1}, FEDERATED),
     "search_space.learning_rate"),
])
def test_bad_fields_name_their_path(value, field):
    with pytest.raises(ConfigError) as info:
        sc.parse(value)
    assert info.value.field == field, str(info.value)


def test_the_federated_task_parses_and_agrees_with_its_runner():
    from bbjax.strategies.pbt import federated as fed

    s = sc.parse(FEDERATED)
    assert s.members() == sc.FederatedMembers(3, 2, "fedyogi") and sc.parse(s.to_json()) == s
    plain = sc.parse({k: v for k, v in FEDERATED.items() if k != "federated"})
    assert plain.members() == sc.FederatedMembers() and plain.federated is None
    assert sc.FEDERATED_RULES == tuple(sorted(fed.SERVER_RATE_RULES))
    assert sc.FEDERATED_HYPERPARAMETERS == tuple(fed.FEDERATED_HYPERPARAMETERS)
    assert sc.load(FEDERATED_EXAMPLE).task == "federated"


@pytest.mark.slow
def test_bbjax_train_runs_the_federated_example(tmp_path):
    out = tmp_path / "run"
    small = {"generations": 2, "population_size": 4, "num_clients": 6,
             "federated.clients_per_round": 3, "federated.rounds": 2,
             "training.max_client_size": 60}
    argv = [a for k, v in small.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", str(FEDERATED_EXAMPLE), "--no-progress", *argv,
                 "--out", str(out)]) == 0
    written = json.loads((out / "metrics.json").read_text())
    assert [row["round"] for row in written["rounds"]] == [1, 2]
    assert written["config"]["task"] == "federated"
    assert sorted(written["population"]["hyperparameters"]) == ["client_learning_rate",
                                                                "server_learning_rate"]
    assert all(0 <= row["accuracy"] <= 1 for row in written["rounds"])


def test_the_example_is_the_issue_s_population():
    s = sc.load(EXAMPLE)
    assert (s.population_size, s.generations) == (20, 50)
    assert (s.exploit, s.explore) == (sc.Truncation(0.2), sc.Perturbation(0.2))


def test_build_runs_the_local_task_and_bbjax_train_writes_the_record(tmp_path, capsys):
    strategy = sc.load(EXAMPLE, SMALL)
    record = build(strategy).run()
    assert isinstance(record, PbtHistory) and record.rounds == 3
    assert record.config == strategy.to_json()
    assert record.fitness.shape == (3, 4) and np.isfinite(record.fitness).all()
    np.testing.assert_allclose(record.metrics["test_loss"], -record.metrics["best_fitness"],
                               rtol=1e-6)
    assert ((0 <= record.metrics["accuracy"]) & (record.metrics["accuracy"] <= 1)).all()
    lr = record.hyperparameters["learning_rate"]
    assert ((0.001 <= lr[0]) & (lr[0] <= 0.5)).all()
    assert set(np.unique(record.hyperparameters["momentum"])) <= {0, 1, 2}
    out = tmp_path / "run"
    argv = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", str(EXAMPLE), "--no-progress", *argv, "--out", str(out)]) == 0
    assert "best_fitness" in capsys.readouterr().out
    written = json.loads((out / "metrics.json").read_text())
    assert [row["round"] for row in written["rounds"]] == [1, 2, 3]
    np.testing.assert_allclose([row["best_fitness"] for row in written["rounds"]],
                               record.metrics["best_fitness"], rtol=1e-6)
    assert written["population"]["parents"] == record.parents.tolist()
    with pytest.raises(ConfigError, match="one device"):
        build(strategy).run(devices=2)
