"""``simulate`` gives the same results on 1, 2, 3 or 4 devices, and really splits the peer
axis over them.

JAX fixes the number of CPU devices when it starts (``XLA_FLAGS``), and this test session
runs with one (``tests/conftest.py``), so the multi-device runs happen once, in a subprocess
with four host devices: it runs a small FedAvg experiment on each device count and pickles
the metrics, the final states and where each state leaf lives; the tests here compare them.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from bbjax.errors import SimulationError
from bbjax.simulation import peer_mesh
from tests.forced_devices import forced_devices_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST_DEVICES = 4
DEVICE_COUNTS = (1, 2, 3, 4)  # 8 clients: split over 1, 2 and 4 devices, replicated over 3
CONFIG = dict(rounds=3, num_clients=8, clients_per_round=4, max_client_size=50, local_steps=2)

RUNS = textwrap.dedent("""
    import json, pickle, sys
    import jax
    import numpy as np
    from bbjax.experiments import FedAvgConfig, build

    out, config, device_counts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    experiment = build(FedAvgConfig(**config))
    runs = {}
    for devices in device_counts:
        history = experiment.run(devices=devices)
        leaves = [(jax.tree_util.keystr(path), leaf)
                  for path, leaf in jax.tree_util.tree_flatten_with_path(history.states)[0]]
        runs[devices] = {
            "metrics": history.metrics,
            "states": {name: np.asarray(leaf) for name, leaf in leaves},
            "placement": {name: {"spec": str(leaf.sharding.spec),
                                 "devices": sorted(d.id for d in leaf.sharding.device_set),
                                 "shards": [s.data.shape for s in leaf.addressable_shards]}
                          for name, leaf in leaves}}
    with open(out, "wb") as handle:
        pickle.dump({"device_count": jax.device_count(), "runs": runs}, handle)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The subprocess's results: ``{"device_count", "runs": {devices: {"metrics", "states",
    "placement"}}}``, states and placements keyed by leaf path."""
    out = tmp_path_factory.mktemp("sharding") / "runs.pkl"
    env = forced_devices_env(HOST_DEVICES)
    done = subprocess.run([sys.executable, "-c", RUNS, str(out), json.dumps(CONFIG),
                           json.dumps(DEVICE_COUNTS)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"subprocess failed:\n{done.stderr[-4000:]}"
    with out.open("rb") as handle:
        return pickle.load(handle)


def _client_leaves(placement: dict) -> dict:
    return {name: where for name, where in placement.items() if name.startswith("['client']")}


def test_the_subprocess_sees_four_devices(runs):
    assert runs["device_count"] == HOST_DEVICES


@pytest.mark.parametrize("devices", DEVICE_COUNTS[1:])
def test_metrics_and_states_do_not_depend_on_the_device_count(runs, devices):
    one, many = runs["runs"][1], runs["runs"][devices]
    assert many["metrics"].keys() == one["metrics"].keys()
    assert np.isfinite(one["metrics"]["accuracy"]).all()
    for name, values in one["metrics"].items():
        np.testing.assert_allclose(many["metrics"][name], values, rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    assert many["states"].keys() == one["states"].keys()
    for name, value in one["states"].items():  # every leaf: server and client models, data
        np.testing.assert_allclose(many["states"][name], value, rtol=1e-6, atol=1e-7,
                                   err_msg=name)


def test_client_states_are_split_over_four_devices(runs):
    clients = _client_leaves(runs["runs"][4]["placement"])
    assert clients
    for name, where in clients.items():
        assert where["spec"] == str(PartitionSpec("peers")), name
        assert where["devices"] == [0, 1, 2, 3], name
        assert len(where["shards"]) == 4, name
        assert all(shape[0] == CONFIG["num_clients"] // 4 for shape in where["shards"]), name


def test_an_entry_the_device_count_does_not_divide_is_replicated(runs):
    for name, where in _client_leaves(runs["runs"][3]["placement"]).items():  # 8 clients
        assert where["spec"] == str(PartitionSpec()), name
        assert where["devices"] == [0, 1, 2], name
        assert all(shape[0] == CONFIG["num_clients"] for shape in where["shards"]), name
    for devices in DEVICE_COUNTS[1:]:  # the single server: replicated on every larger mesh
        for name, where in runs["runs"][devices]["placement"].items():
            if name.startswith("['server']"):
                assert where["spec"] == str(PartitionSpec()), (devices, name)
                assert len(where["devices"]) == devices, (devices, name)


@pytest.mark.parametrize("devices, message", [
    (0, r"devices must be in \[1, "),
    (len(jax.devices()) + 1, r"devices must be in \[1, "),
    (-1, r"devices must be in \[1, "),
    ([], "devices is an empty list"),
    (True, "devices must be a count, a list of devices or None"),
])
def test_peer_mesh_errors(devices, message):
    with pytest.raises(SimulationError, match=message):
        peer_mesh(devices)


def test_peer_mesh_over_a_count_or_a_list():
    assert peer_mesh().shape == {"peers": len(jax.devices())}
    assert list(peer_mesh(1).devices) == jax.devices()[:1]
    assert list(peer_mesh(jax.devices()[:1]).devices) == jax.devices()[:1]
