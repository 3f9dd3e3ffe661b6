"""FedAvg as OS processes on loopback: a server and 4 clients (``python -m bbjax node
serve``) exchanging signed frames; one client is killed (SIGKILL) mid-run and restarted on
its SQLite state. The server's final model must equal an in-process run of the same rounds
(examples/multi_node_fedavg.py's nodes on a reliable network) within 1e-6.

    python examples/deploy_fedavg/launch.py [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from build import build  # noqa: E402

CLIENTS, VICTIM, LOCAL_STEPS = (1, 2, 3, 4), 2, 10


def _serve(workdir: Path, peer: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("JAX_PLATFORMS", "cpu")
    targets = ["--target", "server", "--target", "fedavg"] if peer == 0 else \
        ["--target", "client"]
    log = open(workdir / f"peer{peer}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bbjax", "node", "serve", str(workdir / "artifact.onnx"),
         *targets, "--peer", str(peer), "--peers", str(workdir / "peers.toml"),
         "--key", str(workdir / f"key{peer}.toml"), "--components", "app:components",
         "--state", str(workdir / f"peer{peer}.db"), *extra],
        cwd=str(HERE), env=env, stdout=log, stderr=subprocess.STDOUT)


def _rounds_done(outputs: Path) -> int:
    return len(outputs.read_text().splitlines()) if outputs.exists() else 0


def _flat(states) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(dict(states))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def reference(rounds: int) -> dict[str, np.ndarray]:
    """The server's slot states after ``rounds`` in-process rounds, no envelope lost."""
    spec = importlib.util.spec_from_file_location("multi_node_fedavg",
                                                  HERE.parent / "multi_node_fedavg.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    _, server, clients, _ = example.build_network(LOCAL_STEPS)
    for _ in range(rounds):
        example.run_round(server, clients, lambda sender: 1, {})
    return _flat(server.states)


def main(rounds: int = 3, workdir: str | Path | None = None,
         timeout: float = 600.0) -> dict:
    """Run the deployment; ``{"max_abs_diff", "restarted", "rounds"}``."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="deploy_fedavg_"))
    build(workdir, clients=len(CLIENTS), local_steps=LOCAL_STEPS)
    outputs = workdir / "outputs.jsonl"
    clients = {p: _serve(workdir, p) for p in CLIENTS}
    server = _serve(workdir, 0, "--rounds", str(rounds), "--round-timeout", "300",
                    "--outputs", str(outputs), "--exit-after-rounds")
    restarted = False
    deadline = time.monotonic() + timeout
    try:
        while server.poll() is None and time.monotonic() < deadline:
            if not restarted and _rounds_done(outputs) >= 1:
                clients[VICTIM].kill()          # SIGKILL: no cleanup
                clients[VICTIM].wait(10)
                clients[VICTIM] = _serve(workdir, VICTIM)
                restarted = True
            time.sleep(0.1)
        code = server.wait(max(1.0, deadline - time.monotonic()))
    finally:
        for proc in [server, *clients.values()]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    if code != 0:
        raise RuntimeError(f"the server exited with {code}; see {workdir}/peer0.log")
    final = dict(np.load(workdir / "peer0.db.final.npz"))
    expected = reference(rounds)
    diff = max(float(np.max(np.abs(final[k] - expected[k]))) for k in expected)
    result = {"max_abs_diff": diff, "restarted": restarted,
              "rounds": [json.loads(line)["round"] for line in
                         outputs.read_text().splitlines()]}
    print(f"rounds {result['rounds']}  client {VICTIM} killed and restarted: {restarted}  "
          f"max |deployed - in-process| = {diff:.3g}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir")
    parsed = parser.parse_args()
    sys.exit(0 if main(parsed.rounds, parsed.workdir)["max_abs_diff"] <= 1e-6 else 1)
