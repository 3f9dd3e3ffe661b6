"""Compile FedAvgRound to ``<dir>/artifact.onnx``, a key per peer and ``peers.toml`` with
free loopback ports (peer 0 the server, 1..n the clients)."""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bbjax  # noqa: E402
from app import components  # noqa: E402
from bbjax.deploy.node.identity import new_key_file  # noqa: E402
from bbjax.modules import FedAvgRound  # noqa: E402


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(workdir: str | Path, clients: int = 4, local_steps: int = 10) -> Path:
    """Write the artifact, keys and peers of a FedAvg deployment into ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bindings = components(1)
    compiled = (bbjax.Compiler().bind("model", bindings["model"])
                .bind("data", bindings["data"]).compile(FedAvgRound(local_steps)))
    compiled.save(workdir / "artifact.onnx")
    lines = []
    for peer in range(clients + 1):
        key = workdir / f"key{peer}.toml"
        key.unlink(missing_ok=True)
        public = new_key_file(key)
        lines += ["[[peer]]", f"id = {peer}", f'class = "{"server" if peer == 0 else "client"}"',
                  f'address = "http://127.0.0.1:{_free_port()}"', f'public_key = "{public.hex()}"',
                  ""]
    (workdir / "peers.toml").write_text("\n".join(lines))
    return workdir


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "deploy_fedavg_work"))
