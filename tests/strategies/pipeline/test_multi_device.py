"""P stages on P forced CPU devices give the non-pipelined update, for P = 2 and 4 and
M = 1, 2, 4, 8 micro-batches, SGD and Adam, GPipe and 1F1B, an MLP and a CNN (and, in the
slow grid, the stages ``bbjax.strategies.model_parallel.split`` cuts from a flax model);
and each stage's parameters really live on their own device.

JAX fixes its CPU device count at start and the test session runs with one
(``tests/conftest.py``), so the runs happen in one subprocess with four host devices that
pickles what the tests compare (the pattern of ``tests/simulation/test_sharding.py``).
"""

from __future__ import annotations

import itertools
import json
import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.forced_devices import ROOT, forced_devices_env

RUNS = textwrap.dedent("""
    import json, pickle, sys
    import jax, numpy as np, optax
    from bbjax.strategies.pipeline import pipeline
    from tests.strategies.pipeline import stage_models as models

    out, seed, configs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    optimizers = {"sgd": optax.sgd(0.2, momentum=0.9), "adam": optax.adam(0.05)}
    runs = []
    for n, (kind, p, m, schedule, name) in enumerate(configs):
        if kind == "split":  # the model-parallel package's stages of a flax model
            from flax import nnx
            from bbjax.strategies.model_parallel import split
            from bbjax.strategies.model_parallel.layered import LayeredMLP
            net = LayeredMLP(5, (7, 6), 3, rngs=nnx.Rngs(seed + n))
            stages = split(net, [["dense0", jax.nn.relu], ["dense1", jax.nn.relu], ["head"]])
        else:
            stages = (models.mlp if kind == "mlp" else models.cnn)(p, seed + n)
        x, y = models.data("cnn" if kind == "cnn" else "mlp", 16, seed + n + 1)
        pipe = pipeline(stages, models.loss, optimizers[name], batch=(x, y), micro_batches=m,
                        schedule=schedule, devices=p)
        state, losses = pipe.init(), []
        for _ in range(3):
            state, loss = pipe.step(state, x, y)
            losses.append(float(loss))
        expected, expected_losses = models.reference(stages, optimizers[name], x, y, 3)
        rows = state.params["float32"]
        runs.append({
            "config": (kind, p, m, schedule, name), "losses": losses,
            "expected_losses": expected_losses,
            "params": jax.tree.map(np.asarray, pipe.params(state)),
            "expected": jax.tree.map(np.asarray, expected),
            "initial": jax.tree.map(np.asarray, stages.params),
            "devices": sorted(d.id for d in rows.sharding.device_set),
            "shards": [(s.device.id, s.data.shape) for s in rows.addressable_shards]})
    with open(out, "wb") as handle:
        pickle.dump({"device_count": jax.device_count(), "runs": runs}, handle)
""")

DEFAULT = [("mlp", 4, 8, "gpipe", "adam"), ("mlp", 2, 2, "1f1b", "sgd"),
           ("cnn", 4, 4, "1f1b", "sgd")]
GRID = ([("mlp", p, m, "gpipe", o) for p, m, o in
         itertools.product((2, 4), (1, 2, 4, 8), ("sgd", "adam"))]
        + [("mlp", p, m, "1f1b", "adam") for p, m in itertools.product((2, 4), (1, 2, 4, 8))]
        + [("cnn", 4, m, s, "sgd") for m, s in itertools.product((1, 2, 4, 8), ("gpipe", "1f1b"))]
        + [("split", 3, 4, "1f1b", "adam")])


def run(configs: list[tuple], tmp_path: pathlib.Path) -> dict:
    out = tmp_path / "runs.pkl"
    env = forced_devices_env(4)
    seed = str(np.random.default_rng().integers(1 << 30))
    done = subprocess.run([sys.executable, "-c", RUNS, str(out), seed, json.dumps(configs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, f"subprocess failed (seed {seed}):\n{done.stderr[-4000:]}"
    with out.open("rb") as handle:
        return {**pickle.load(handle), "seed": seed}


def check(result: dict) -> None:
    assert result["device_count"] == 4
    for record in result["runs"]:
        p = record["config"][1]
        where = f"{record['config']} seed {result['seed']}"
        assert record["devices"] == list(range(p)), where  # stage s's row on device s
        assert sorted(d for d, _ in record["shards"]) == list(range(p))
        assert all(shape[0] == 1 for _, shape in record["shards"]), where
        np.testing.assert_allclose(record["losses"], record["expected_losses"], rtol=1e-5,
                                   err_msg=where)
        got, expected = _leaves(record["params"]), _leaves(record["expected"])
        assert len(got) == len(expected) == 2 * p
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6, err_msg=where)
        assert max(np.abs(a - b).max() for a, b in zip(got, _leaves(record["initial"]))) > 1e-3


def _leaves(tree) -> list[np.ndarray]:
    import jax
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def test_stages_on_four_devices_equal_the_non_pipelined_step(tmp_path):
    check(run(DEFAULT, tmp_path))


@pytest.mark.slow  # 29 compiled pipelines in a fresh interpreter: 70-100 s on 2 cores
def test_the_whole_grid_on_devices(tmp_path):
    check(run(GRID, tmp_path))
