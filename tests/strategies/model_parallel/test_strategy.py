"""``ModelParallel`` JSON: the partitions must split the model's layers in order, a
pipeline's micro-batches must divide the batch, and ``bbjax train`` runs both examples
(slow: a compile and a run each; test_training runs the same round by default)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bbjax.cli import main
from bbjax.errors import ConfigError
from bbjax.strategies import config as sc
from bbjax.strategies.build import build
from bbjax.strategies.model_parallel.strategy import parts

EXAMPLES = Path(__file__).parents[3] / "examples" / "strategies"
SMALL = {"rounds": 3, "training.max_client_size": 120, "hidden_layers": [8, 8],
         "training.batch_size": 8, "training.learning_rate": 0.1}


def _strategy(node_ids, communication=None, **extra):
    return {"type": "ModelParallel",
            "partitions": [{"node_ids": ids, "target": {"WorkerId": f"w{i}"}}
                           for i, ids in enumerate(node_ids)],
            "communication": communication or {"protocol": "Direct"}, **extra}


@pytest.mark.parametrize("node_ids, field, match", [
    ([["dense0"], ["dense1"], ["embed"]], "partitions[2].node_ids[0]", "not a layer"),
    ([["dense1"], ["dense0", "head"]], "partitions[0].node_ids[0]", "'dense0' comes next"),
    ([["dense0", "head"], ["dense1"]], "partitions[0].node_ids[1]", "out of order"),
    ([["dense0"], ["dense1"]], "partitions", r"no layer \['head'\]"),
    ([["dense0", "dense1", "head"]], "partitions", "at least 2 stages"),
])
def test_partitions_must_split_the_layers_in_order(node_ids, field, match):
    with pytest.raises(ConfigError, match=match) as caught:
        parts(sc.parse(_strategy(node_ids, hidden_layers=[4, 4])))
    assert caught.value.field == field


def test_claimed_twice_and_micro_batches_that_do_not_divide_are_refused_at_parse():
    with pytest.raises(ConfigError) as twice:
        sc.parse(_strategy([["dense0", "dense1"], ["dense1", "head"]]))
    assert twice.value.field == "partitions[1].node_ids[0]"
    pipe = {"protocol": "Pipeline", "micro_batch_size": 3}
    with pytest.raises(ConfigError, match="must divide training.batch_size 10") as caught:
        sc.parse(_strategy([["dense0", "dense1"], ["head"]], pipe))
    assert caught.value.field == "communication.micro_batch_size"
    ok = sc.parse(_strategy([["dense0", "dense1"], ["head"]], pipe,
                            training={"batch_size": 12}))
    assert ok.micro_batches() == 4 and sc.parse(ok.to_json()) == ok
    with pytest.raises(ConfigError) as width:
        sc.parse(_strategy([["head"]], hidden_layers=[0]))
    assert width.value.field == "hidden_layers[0]"


def test_a_batch_larger_than_the_data_is_refused():
    strategy = sc.parse(_strategy([["dense0"], ["head"]], hidden_layers=[4],
                                  training={"max_client_size": 20, "batch_size": 64}))
    with pytest.raises(ConfigError) as caught:
        build(strategy)
    assert caught.value.field == "training.batch_size"


def test_stages_follow_the_partitions():
    strategy = sc.load(EXAMPLES / "model_parallel_pipeline.json")
    module, bindings, population, _, stages = parts(strategy)
    assert stages.names == ("dense0+dense1", "head")
    assert (module.num_stages, module.micro_batches) == (2, 4)
    assert sorted(bindings) == ["data", "stage0", "stage1"]
    assert population["stage0"].hosts == ("self",) and population["stage1"].hosts == ()


@pytest.mark.slow
def test_direct_example_trains_through_the_cli(tmp_path, capsys):
    _train("model_parallel", tmp_path, capsys)


@pytest.mark.slow
def test_pipeline_example_trains_through_the_cli(tmp_path, capsys):
    _train("model_parallel_pipeline", tmp_path, capsys)


def _train(name, tmp_path, capsys):
    path, out = EXAMPLES / f"{name}.json", tmp_path / "run"
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(["train", str(path), "--no-progress", *sets, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"] == json.loads(json.dumps(sc.load(path, SMALL).to_json()))
    rows = record["rounds"]
    assert [r["round"] for r in rows] == [1, 2, 3]
    losses = [r["train_loss"] for r in rows]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert 0.0 <= rows[-1]["accuracy"] <= 1.0
