"""AllReduce on 4 devices gives the parameters it gives on 1, with the replicas' states
split over the devices (so the all-reduce is a cross-device collective).

JAX fixes its CPU device count at start (``XLA_FLAGS``) and the test session runs with one,
so the runs happen in a subprocess with four host devices, as in
``tests/simulation/test_sharding.py``.
"""

from __future__ import annotations

import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.forced_devices import forced_devices_env

ROOT = pathlib.Path(__file__).resolve().parents[3]

RUNS = textwrap.dedent("""
    import pickle, sys
    import jax, numpy as np, optax
    from flax import nnx
    import bbjax
    from bbjax.models import MLP, cross_entropy
    from bbjax.strategies.parallel import (AllReduceRound, all_reduce_mean,
                                           all_reduce_population, replica, shard_source)

    rng = np.random.default_rng(int(sys.argv[2]))
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.integers(0, 3, 50).astype(np.int32)
    bindings = {"model": replica(MLP(6, 8, 3, rngs=nnx.Rngs(0)), optax.sgd(0.2, momentum=0.9),
                                 cross_entropy),
                "data": shard_source(x, y, 4, 10), "all_reduce": all_reduce_mean()}
    compiler = bbjax.Compiler()
    for slot, component in bindings.items():
        compiler = compiler.bind(slot, component)
    compiled = compiler.compile(AllReduceRound())
    runs = {}
    for devices in (1, 4):
        history = bbjax.simulate(compiled, all_reduce_population(x, y, 4, 10), 5,
                                 jax.random.key(0), bindings=bindings, devices=devices)
        kernel = history.states["replica"]["model"].params["out"]["kernel"]
        runs[devices] = {
            "params": jax.tree.map(np.asarray, history.states["replica"]["model"].params),
            "loss": np.asarray(history["train_loss"]),
            "devices": sorted(d.id for d in kernel.sharding.device_set),
            "shards": [s.data.shape for s in kernel.addressable_shards]}
    with open(sys.argv[1], "wb") as handle:
        pickle.dump({"device_count": jax.device_count(), "runs": runs}, handle)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("all_reduce") / "runs.pkl"
    env = forced_devices_env(4)
    seed = str(np.random.default_rng().integers(1 << 30))
    done = subprocess.run([sys.executable, "-c", RUNS, str(out), seed], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"subprocess failed:\n{done.stderr[-4000:]}"
    with out.open("rb") as handle:
        return pickle.load(handle)


@pytest.mark.slow  # about 21 s on the 2-core CPU (a fresh interpreter, two compiles)
def test_all_reduce_on_four_devices_equals_one_device(runs):
    assert runs["device_count"] == 4
    one, four = runs["runs"][1], runs["runs"][4]
    assert one["devices"] == [0] and four["devices"] == [0, 1, 2, 3]
    assert four["shards"] == [(1, 8, 3)] * 4  # one replica's kernel per device
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-6)
    for a, b in zip(_leaves(four["params"]), _leaves(one["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a, a[:1].repeat(4, 0), rtol=1e-6, atol=1e-7)  # all equal


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [tree]
