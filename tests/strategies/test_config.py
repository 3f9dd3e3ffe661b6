"""Strategy configurations: somatize's serde JSON parsed exactly, every bad field named by
its JSON path, round trips, and any JSON value giving a configuration or a ConfigError."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bbjax.errors import ConfigError
from bbjax.strategies import config as sc

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "strategies").glob("*.json"))

FEDERATED = {"type": "Federated", "num_clients": 10, "rounds": 50,
             "aggregation": {"method": "FedYogi", "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
             "client_selection": {"method": "Random", "fraction": 0.3}}
VALID = [
    {"type": "Local"},
    {"type": "DataParallel", "num_replicas": 4, "aggregation": {"method": "AllReduce"}},
    {"type": "DataParallel", "num_replicas": 4,
     "aggregation": {"method": "ParameterServer", "staleness": 1, "delays": [0, 1, 0, 2]}},
    {"type": "DataParallel", "num_replicas": 6,
     "aggregation": {"method": "Decentralized", "topology": "torus", "rows": 2}},
    {"type": "DataParallel", "num_replicas": 8,
     "aggregation": {"method": "Decentralized", "topology": "random_regular", "k": 3}},
    FEDERATED,
    {**FEDERATED, "aggregation": {"method": "FedProx", "mu": 0.01},
     "client_selection": {"method": "ByCapability", "required_tags": ["gpu"]},
     "client_tags": [["gpu"]] + [[]] * 9},
    {"type": "ModelParallel",
     "partitions": [{"node_ids": ["a", "b"], "target": {"WorkerId": "w0"}},
                    {"node_ids": ["c"], "target": {"Tag": "gpu"}}],
     "communication": {"protocol": "Direct"}},
    {"type": "PopulationBased", "population_size": 4, "generations": 2,
     "exploit": {"method": "Binary"}, "explore": {"method": "Resample"}},
]


def test_every_example_parses_and_round_trips():
    assert len(EXAMPLES) >= 9
    kinds = set()
    for path in EXAMPLES:
        strategy = sc.load(path)
        kinds.add(type(strategy).__name__)
        text = json.dumps(strategy.to_json())
        assert sc.loads(text) == strategy
        _assert_within(json.loads(path.read_text()), json.loads(text))
    assert kinds == {"Local", "DataParallel", "Federated", "ModelParallel", "PopulationBased"}


def _assert_within(raw, out):
    """Every field ``raw`` gives is in ``out`` with the same value (``out`` adds defaults)."""
    if isinstance(raw, dict):
        assert set(raw) <= set(out), (raw, out)
        for key, value in raw.items():
            _assert_within(value, out[key])
    elif isinstance(raw, list):
        assert len(raw) == len(out)
        for a, b in zip(raw, out):
            _assert_within(a, b)
    else:
        assert raw == out and type(raw) is type(out), (raw, out)


def test_serde_tags_give_the_typed_values():
    s = sc.parse(VALID[5])
    assert s == sc.Federated(10, 50, sc.FedYogi(0.9, 0.99, 1e-3), sc.RandomClients(0.3))
    assert s.cohort_size() == 3 and s.training == sc.Training()
    ps = sc.parse(VALID[2]).aggregation
    assert ps == sc.ParameterServer(staleness=1, delays=(0, 1, 0, 2))
    mp = sc.parse(VALID[7])
    assert mp.partitions[0] == sc.Partition(("a", "b"), sc.WorkerTarget("w0"))
    assert mp.partitions[1].target == sc.TagTarget("gpu")
    assert mp.communication == sc.Direct()
    pbt = sc.parse(VALID[8])
    assert (pbt.exploit, pbt.explore) == (sc.Binary(), sc.Resample())
    fed = sc.parse(VALID[6])
    assert fed.eligible() == (0,) and fed.cohort_size() == 1
    assert isinstance(fed.aggregation.mu, float)


@pytest.mark.parametrize("value", VALID)
def test_to_json_round_trips(value):
    strategy = sc.parse(value)
    again = sc.parse(json.loads(json.dumps(strategy.to_json())))
    assert again == strategy and hash(again) == hash(strategy)
    out = strategy.to_json()
    assert next(iter(out)) == "type" and out["type"] == value["type"]


def _with(path: str, new, base=None):
    """A copy of ``base`` (default ``FEDERATED``) with the dotted ``path`` (list indices as
    parts) set to ``new``, or deleted when ``new`` is ``...``."""
    value = copy.deepcopy(FEDERATED if base is None else base)
    node = value
    names = path.split(".")
    for name in names[:-1]:
        node = node[int(name)] if isinstance(node, list) else node[name]
    if new is ...:
        del node[names[-1]]
    elif isinstance(node, list):
        node[int(names[-1])] = new
    else:
        node[names[-1]] = new
    return value


PS = VALID[2]
TORUS = VALID[3]
MP = VALID[7]
PBT = VALID[8]
BAD = [
    (_with("type", "Custom"), "type"),
    (_with("type", ...), "type"),
    (_with("num_clients", ...), "num_clients"),
    (_with("num_clients", 0), "num_clients"),
    (_with("num_clients", True), "num_clients"),
    (_with("num_clients", 2.0), "num_clients"),
    (_with("rounds", "5"), "rounds"),
    (_with("aggregation.method", "FedAdam"), "aggregation.method"),
    (_with("aggregation.method", ...), "aggregation.method"),
    (_with("aggregation", "FedAvg"), "aggregation"),
    (_with("aggregation.beta1", 1.0), "aggregation.beta1"),
    (_with("aggregation.beta2", -0.1), "aggregation.beta2"),
    (_with("aggregation.tau", 0), "aggregation.tau"),
    (_with("aggregation.tau", float("nan")), "aggregation.tau"),
    (_with("aggregation.eta", 0), "aggregation.eta"),
    (_with("aggregation.extra", 1), "aggregation.extra"),
    (_with("aggregation", {"method": "FedProx", "mu": -0.5}), "aggregation.mu"),
    (_with("aggregation", {"method": "FedProx"}), "aggregation.mu"),
    (_with("client_selection.fraction", 0), "client_selection.fraction"),
    (_with("client_selection.fraction", 1.5), "client_selection.fraction"),
    (_with("client_selection", {"method": "ByCapability", "required_tags": ["gpu"]}),
     "client_selection.required_tags"),
    (_with("client_selection", {"method": "ByCapability", "required_tags": ["a", "a"]}),
     "client_selection.required_tags[1]"),
    (_with("client_tags", [["gpu"]] * 3), "client_tags"),
    (_with("client_tags", [[""]] * 10), "client_tags[0][0]"),
    (_with("training", {"learning_rate": 0}), "training.learning_rate"),
    (_with("training", {"model": "cnn"}), "training.model"),
    (_with("training", {"seed": 2**32}), "training.seed"),
    (_with("training", {"test_fraction": 1.0}), "training.test_fraction"),
    (_with("training", []), "training"),
    (_with("num_replicas", 0, PS), "num_replicas"),
    (_with("aggregation.delays", [0, 1, 2], PS), "aggregation.delays"),
    (_with("aggregation.delays", [0, -1, 2, 0], PS), "aggregation.delays[1]"),
    (_with("aggregation.staleness", -1, PS), "aggregation.staleness"),
    (_with("aggregation.staleness", ..., PS), "aggregation.delays"),
    (_with("aggregation.rows", 4, TORUS), "aggregation.rows"),
    (_with("aggregation.rows", ..., TORUS), "aggregation.rows"),
    (_with("aggregation.k", 2, TORUS), "aggregation.k"),
    (_with("aggregation.topology", "star", TORUS), "aggregation.topology"),
    (_with("partitions.1.node_ids", ["b"], MP), "partitions[1].node_ids[0]"),
    (_with("partitions.0.node_ids", [], MP), "partitions[0].node_ids"),
    (_with("partitions.0.target", {"Worker": "w0"}, MP), "partitions[0].target"),
    (_with("partitions.0.target", {"WorkerId": 3}, MP), "partitions[0].target.WorkerId"),
    (_with("partitions", [], MP), "partitions"),
    (_with("communication", {"protocol": "Pipeline", "micro_batch_size": 0}, MP),
     "communication.micro_batch_size"),
    (_with("communication.protocol", "Grpc", MP), "communication.protocol"),
    (_with("population_size", 1, PBT), "population_size"),
    (_with("exploit", {"method": "Truncation", "fraction": 0}, PBT), "exploit.fraction"),
    (_with("explore", {"method": "Perturbation", "factor": 1.0}, PBT), "explore.factor"),
    (_with("explore", {"method": "Perturbation"}, PBT), "explore.factor"),
    ([FEDERATED], "$"),
    ("Local", "$"),
    ({1: "Local"}, "$"),
]


@pytest.mark.parametrize("value, field", BAD, ids=[f for _, f in BAD])
def test_bad_fields_are_named_by_their_json_path(value, field):
    with pytest.raises(ConfigError) as info:
        sc.parse(value)
    assert info.value.field == field
    shown = "the strategy" if field == "$" else field
    assert str(info.value).startswith(shown), str(info.value)


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError) as info:
        sc.FedProx(mu=-1.0)
    assert info.value.field == "mu"
    with pytest.raises(ConfigError) as info:
        sc.Federated(4, 2, sc.FedAvg(), {"method": "Random", "fraction": 2})
    assert info.value.field == "client_selection.fraction"
    built = sc.Federated(4, 2, sc.FedAvg(), {"method": "Random", "fraction": 0.5})
    assert built.client_selection == sc.RandomClients(0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.rounds = 3


def test_training_defaults_are_bbjax_simulates():
    from bbjax.experiments import FedAvgConfig

    simulate = FedAvgConfig()
    for f in dataclasses.fields(sc.Training):
        assert getattr(sc.Training(), f.name) == getattr(simulate, f.name), f.name


def test_random_cohort_is_the_ceiling_of_the_fraction():
    for n in (1, 7, 10, 33):
        for fraction in (0.01, 0.3, 0.5, 0.999, 1.0):
            strategy = sc.parse({**FEDERATED, "num_clients": n,
                                 "client_selection": {"method": "Random", "fraction": fraction}})
            assert strategy.cohort_size() == math.ceil(fraction * n)


def test_load_applies_dotted_overrides_and_names_the_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(FEDERATED))
    s = sc.load(path, {"rounds": 3, "aggregation.tau": 0.5, "training.local_steps": 2})
    assert (s.rounds, s.aggregation.tau, s.training.local_steps) == (3, 0.5, 2)
    with pytest.raises(ConfigError) as info:
        sc.load(path, {"aggregation.tau": -1})
    assert info.value.field == "aggregation.tau" and str(path) in str(info.value)
    with pytest.raises(ConfigError) as info:
        sc.load(path, {"rounds.x": 1})
    assert info.value.field == "rounds"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        sc.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        sc.load(tmp_path / "missing.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["Local", "DataParallel", "Federated", "ModelParallel",
                       "PopulationBased", "FedAvg", "All", "Random", "ring", "torus"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["type", "method", "protocol", "num_clients", "rounds",
                                       "aggregation", "client_selection", "num_replicas",
                                       "fraction", "mu", "topology", "k", "rows", "training",
                                       "partitions", "node_ids", "target", "WorkerId",
                                       "client_tags", "required_tags"]) | st.text(max_size=5),
                      inner, max_size=5),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_any_json_value_gives_a_config_or_a_config_error(value):
    try:
        strategy = sc.parse(value)
    except ConfigError as exc:
        assert exc.field
        return
    assert sc.parse(strategy.to_json()) == strategy


def _paths(value, prefix=""):
    """Every (dotted path, leaf) of a JSON value, list indices as path parts."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return [prefix]
    return [prefix] * bool(prefix) + [p for k, v in items
                                      for p in _paths(v, f"{prefix}.{k}" if prefix else k)]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_mutating_a_valid_strategy_gives_a_config_or_names_a_field(base, data):
    path = data.draw(st.sampled_from(_paths(base)))
    new = data.draw(json_values)
    value = _with(path, new, base)
    try:
        strategy = sc.parse(value)
    except ConfigError as exc:
        assert exc.field
        return
    assert sc.parse(json.loads(json.dumps(strategy.to_json()))) == strategy
