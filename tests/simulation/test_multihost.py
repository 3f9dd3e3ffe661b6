"""``simulate`` across processes: two JAX processes on this machine, two CPU devices each,
joined by ``jax.distributed.initialize`` (CPU collectives over gloo), run one simulation over
the global four-device mesh, and get what a plain single-device run gets.

Every process must issue the same global computations in the same order; computations on
its own devices only may differ between processes. Each worker (``WORKER``):

1. runs the experiment over all global devices (``devices=None``; the client states are
   split over the four devices of both processes) and gathers its final states to the host
   with ``multihost_utils.process_allgather``;
2. resumes from those host (numpy) states for one more round over the global mesh
   (``initial_states`` places host data onto the global sharding);
3. computes a reference on one of its own devices: process 0 the experiment, process 1 the
   resumed round.

The tests compare the processes with each other and with the references.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from tests.forced_devices import forced_devices_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROCESSES, LOCAL_DEVICES = 2, 2
CONFIG = dict(rounds=2, num_clients=8, clients_per_round=4, max_client_size=50, local_steps=2)
TIMEOUT_S = 300

WORKER = textwrap.dedent("""
    import json, pickle, sys
    import jax

    process_id, processes, port, out = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                        sys.argv[4])
    jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                               num_processes=processes, process_id=process_id,
                               initialization_timeout=120)

    import numpy as np
    from jax.experimental import multihost_utils
    from bbjax.simulation import simulate
    from bbjax.experiments import FedAvgConfig, build

    def to_host(tree):
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))

    experiment = build(FedAvgConfig(**json.loads(sys.argv[5])))
    common = dict(bindings=experiment.bindings, evaluate=experiment.evaluate)

    # Global computations: the same on every process, in the same order.
    everywhere = experiment.run()
    client = jax.tree.leaves(everywhere.states["client"])[0]
    placement = {"process_count": jax.process_count(), "device_count": jax.device_count(),
                 "local_device_count": jax.local_device_count(),
                 "spec": str(client.sharding.spec),
                 "mesh_processes": sorted({d.process_index for d in client.sharding.device_set}),
                 "mesh_devices": len(client.sharding.device_set),
                 "addressable_shards": len(client.addressable_shards),
                 "fully_addressable": client.is_fully_addressable}
    states = to_host(everywhere.states)
    resumed = simulate(experiment.compiled, experiment.population, 1, jax.random.PRNGKey(1),
                       initial_states=states, **common)
    result = {"placement": placement, "global": (everywhere.metrics, states),
              "resumed": (resumed.metrics, to_host(resumed.states))}

    # Local computations: each process on one device of its own.
    one_device = jax.local_devices()[:1]
    if process_id == 0:
        local = experiment.run(devices=one_device)
        result["local"] = (local.metrics, jax.device_get(local.states))
    else:
        local = simulate(experiment.compiled, experiment.population, 1, jax.random.PRNGKey(1),
                         initial_states=states, devices=one_device, **common)
        result["resumed_local"] = (local.metrics, jax.device_get(local.states))
    jax.distributed.shutdown()
    with open(out, "wb") as handle:
        pickle.dump(result, handle)
""")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _gloo_missing() -> bool:
    """Whether this jaxlib was built without gloo, the CPU collectives across processes
    (``jax._src.xla_bridge.make_cpu_client`` calls ``_jax.make_gloo_tcp_collectives``)."""
    try:
        from jax._src.lib import _jax
    except ImportError:  # moved in a later jax: let the workers find out
        return False
    return not hasattr(_jax, "make_gloo_tcp_collectives")


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> list[dict]:
    """Run the worker processes to the end; each one's pickled results, by process id."""
    if _gloo_missing():
        pytest.skip("this jaxlib has no gloo CPU collectives (no _jax.make_gloo_tcp_collectives)"
                    ", so CPU processes cannot run computations together")
    out = tmp_path_factory.mktemp("multihost")
    # JAX warns that *_proxy variables can hang distributed.initialize; the coordinator is
    # local here.
    env = forced_devices_env(LOCAL_DEVICES, {name: value for name, value in os.environ.items()
                                             if "_proxy" not in name.lower()})
    port = _free_port()
    logs = [out / f"process{i}.log" for i in range(PROCESSES)]
    procs = []
    for i in range(PROCESSES):
        with logs[i].open("w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(i), str(PROCESSES), str(port),
                 str(out / f"process{i}.pkl"), json.dumps(CONFIG)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = _wait(procs, TIMEOUT_S)
    report = "\n".join(f"--- process {i} (exit {code}):\n{log.read_text()[-3000:]}"
                       for i, (code, log) in enumerate(zip(codes, logs)))
    assert codes == [0] * PROCESSES, f"exit codes {codes} (None: killed)\n{report}"
    results = []
    for i in range(PROCESSES):
        with (out / f"process{i}.pkl").open("rb") as handle:
            results.append(pickle.load(handle))
    return results


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Exit codes once every process ended, or one failed (the others would wait for it in
    a collective), or ``timeout`` seconds passed; processes still running are killed and
    have None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        if None not in codes or any(code for code in codes):
            break
        time.sleep(0.5)
    codes = [p.poll() for p in procs]
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    return codes


def _assert_same(got: tuple, want: tuple, what: str) -> None:
    """``(metrics, states)`` pairs agree metric by metric and leaf by leaf."""
    (got_metrics, got_states), (want_metrics, want_states) = got, want
    assert got_metrics.keys() == want_metrics.keys(), what
    for name, values in want_metrics.items():
        np.testing.assert_allclose(got_metrics[name], values, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{what}: {name}")
    got_leaves, want_leaves = _leaves(got_states), _leaves(want_states)
    assert got_leaves.keys() == want_leaves.keys(), what
    for name, value in want_leaves.items():
        np.testing.assert_allclose(got_leaves[name], value, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{what}: {name}")


def _leaves(tree) -> dict:
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_the_mesh_spans_both_processes_and_splits_the_clients(workers):
    for placement in (w["placement"] for w in workers):
        assert placement["process_count"] == PROCESSES
        assert placement["device_count"] == PROCESSES * LOCAL_DEVICES
        assert placement["local_device_count"] == LOCAL_DEVICES
        assert placement["spec"] == str(PartitionSpec("peers"))
        assert placement["mesh_processes"] == list(range(PROCESSES))
        assert placement["mesh_devices"] == PROCESSES * LOCAL_DEVICES
        assert placement["addressable_shards"] == LOCAL_DEVICES
        assert not placement["fully_addressable"]


def test_the_global_run_matches_a_single_device_run(workers):
    assert np.isfinite(workers[0]["local"][0]["accuracy"]).all()
    _assert_same(workers[0]["global"], workers[0]["local"], "global run")


def test_resuming_from_host_states_over_the_global_mesh(workers):
    _assert_same(workers[1]["resumed"], workers[1]["resumed_local"], "resumed round")


def test_every_process_gets_the_same_results(workers):
    for part in ("global", "resumed"):
        _assert_same(workers[1][part], workers[0][part], part)
