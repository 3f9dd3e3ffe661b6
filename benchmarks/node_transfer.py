"""Large models through ``bbjax node serve``: FedAvg rounds of one server and one client, as
two OS processes on loopback, for an MLP of about ``--mb`` megabytes of float32 weights.

Each round the server's model goes to the client and the client's model comes back: two
envelopes of the model's size, each signed, chunked into 4 MiB frames, persisted in the
sender's SQLite outbox, POSTed, checked by the receiver's gate, reassembled, delivered and
persisted with the receiver's state. Round time is the median gap between the server's
round outputs after the first round (compilation excluded). The same rounds run in one
process on installed Nodes that hand each other the envelope bytes directly (the baseline,
same run); the difference is what the network path costs, and 2 x model bytes over it is
the transfer throughput. The networked run's final server model must equal the in-process
one exactly.

With ``--flower``, the same rounds also run on Flower's Deployment Runtime (a SuperLink and
one SuperNode on loopback, ``flower_transfer_app/`` in the Flower venv of
``against_flower.py``): the ServerApp sends the model, the ClientApp takes one SGD step of
the same MLP and returns it; each round is timed in the ServerApp. Flower starts a ClientApp
process for every message, so its rounds have a floor that does not depend on the model's
size; the smallest ``--mb`` measures it for both, and the marginal throughput of a size is
2 x (its bytes - the smallest's) over (its round time - the smallest's).

Writes benchmarks/results/node_transfer.json (RESULTS.md is left alone).

    python benchmarks/node_transfer.py [--mb 0.3,10,100] [--rounds 3] [--flower]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HIDDEN_ENV = "BBJAX_NODE_TRANSFER_HIDDEN"
INPUTS, CLASSES = 60, 10


def hidden_units(mb: float) -> int:
    """Hidden units of an MLP(60, h, 10) of about ``mb`` MB of float32 weights."""
    return max(1, int(mb * 1e6 / 4 / (INPUTS + 1 + CLASSES)))


def components(peer: int) -> dict:
    """Slot -> component of ``peer`` (``--components node_transfer:components``)."""
    import optax
    from flax import nnx

    import bbjax
    from bbjax.models import MLP, cross_entropy

    hidden = int(os.environ[HIDDEN_ENV])
    data = bbjax.data.synthetic(1.0, 1.0, num_clients=1, seed=1, max_size=64)
    model = bbjax.components.flax_model(MLP(INPUTS, hidden, CLASSES, rngs=nnx.Rngs(0)),
                                        optax.sgd(0.1), cross_entropy)
    return {"model": model,
            "data": bbjax.components.array_data_source(*data.client(0), batch_size=32)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(compiled, rounds: int, cap: int) -> tuple[list[float], dict]:
    """Seconds of each round of a server and a client Node handing over envelope bytes."""
    import bbjax
    from bbjax.runtime import AppOutput, Limits, NodeConfig, Outbound

    limits = Limits(max_envelope_bytes=cap, max_fill_bytes=cap)
    server = bbjax.install(0, compiled, ["fedavg", "fedavg_server"], components(0),
                           NodeConfig(peers={"client": [1], "server": [0]}, limits=limits))
    client = bbjax.install(1, compiled, ["fedavg_client"], components(1),
                           NodeConfig(peers={"server": [0]}, limits=limits))
    nodes = {0: server, 1: client}
    seconds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        server.start()
        outputs = []
        pending = [server]
        while not outputs:
            steps = [s for node in pending for s in node.poll()]
            for s in steps:
                if isinstance(s, Outbound):
                    nodes[s.peer].deliver(s.data)
            outputs = [s for s in steps if isinstance(s, AppOutput)]
            pending = [server, client]
        seconds.append(time.perf_counter() - t0)
    return seconds, dict(server.states)


def write_deployment(workdir: Path) -> None:
    from bbjax.deploy.node.identity import new_key_file

    lines = []
    for peer, cls in ((0, "server"), (1, "client")):
        public = new_key_file(workdir / f"key{peer}.toml")
        lines += ["[[peer]]", f"id = {peer}", f'class = "{cls}"',
                  f'address = "http://127.0.0.1:{free_port()}"', f'public_key = "{public.hex()}"',
                  ""]
    (workdir / "peers.toml").write_text("\n".join(lines))


def serve(workdir: Path, peer: int, cap: int, hidden: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
               JAX_PLATFORMS="cpu", **{HIDDEN_ENV: str(hidden)})
    targets = ["--target", "server", "--target", "fedavg"] if peer == 0 else \
        ["--target", "client"]
    return subprocess.Popen(
        [sys.executable, "-m", "bbjax", "node", "serve", str(workdir / "artifact.onnx"),
         *targets, "--peer", str(peer), "--peers", str(workdir / "peers.toml"),
         "--key", str(workdir / f"key{peer}.toml"), "--components", "node_transfer:components",
         "--state", str(workdir / f"peer{peer}.db"), "--max-envelope-bytes", str(cap),
         "--round-timeout", "600", *extra],
        env=env, stdout=open(workdir / f"peer{peer}.log", "ab"), stderr=subprocess.STDOUT)


def networked(workdir: Path, rounds: int, cap: int, hidden: int) -> tuple[list[float], Path]:
    """Seconds between the server's round outputs, and its final-state file."""
    outputs = workdir / "outputs.jsonl"
    client = serve(workdir, 1, cap, hidden)
    server = serve(workdir, 0, cap, hidden, "--rounds", str(rounds), "--outputs", str(outputs),
                   "--exit-after-rounds")
    stamps: list[float] = []
    try:
        deadline = time.monotonic() + 1800
        while server.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the networked rounds did not end within 1800 s")
            done = len(outputs.read_text().splitlines()) if outputs.exists() else 0
            stamps += [time.perf_counter()] * (done - len(stamps))
            time.sleep(0.01)
        if server.returncode != 0:
            raise RuntimeError(f"the server exited {server.returncode}: see {workdir}/peer0.log")
    finally:
        for proc in (server, client):
            proc.terminate()
            proc.wait()
    return list(np.diff(stamps)), workdir / "peer0.db.final.npz"


def flower(workdir: Path, rounds: int, hidden: int) -> list[float]:
    """Seconds of each round on Flower's Deployment Runtime (after a first one)."""
    from against_flower import flower_python

    bin_dir = flower_python().parent
    home = workdir / "flwr-home"
    home.mkdir()
    link, node = free_port(), free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
                                      f'address = "127.0.0.1:{link}"\ninsecure = true\n')
    env = dict(os.environ, FLWR_HOME=str(home), JAX_PLATFORMS="cpu",
               PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    log = open(workdir / "flower.log", "ab")
    procs = [subprocess.Popen([str(bin_dir / "flower-superlink"), "--insecure", "--port",
                               str(link), "--disable-runtime-dependency-installation"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)]
    try:
        time.sleep(3)
        procs.append(subprocess.Popen([str(bin_dir / "flower-supernode"), "--insecure",
                                       "--superlink", f"127.0.0.1:{link}", "--port", str(node)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
        out = workdir / "flower.json"
        subprocess.run([str(bin_dir / "flwr"), "run", str(Path(__file__).parent /
                        "flower_transfer_app"), "bench", "--stream", "--run-config",
                        f'hidden={hidden} rounds={rounds + 1} out="{out}"'],
                       env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1800, check=True)
        return json.loads(out.read_text())["seconds"][1:]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def row(mb: float, rounds: int, tmp: Path, with_flower: bool) -> dict:
    import jax

    import bbjax
    from bbjax.modules import FedAvgRound

    hidden = hidden_units(mb)
    os.environ[HIDDEN_ENV] = str(hidden)
    bindings = components(0)
    model_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(
        bindings["model"].init(jax.random.key(0))))
    cap = 2 * model_bytes + (1 << 20)
    workdir = tmp / f"mb{mb:g}"
    workdir.mkdir()
    compiled = (bbjax.Compiler().bind("model", bindings["model"]).bind("data", bindings["data"])
                .compile(FedAvgRound(1)))
    compiled.save(workdir / "artifact.onnx")
    write_deployment(workdir)
    t0 = time.perf_counter()
    wire, final = networked(workdir, rounds + 1, cap, hidden)
    wall = time.perf_counter() - t0
    local, states = in_process(compiled, rounds + 1, cap)
    saved = np.load(final)
    flat = jax.tree_util.tree_flatten_with_path(states)[0]
    diff = max(float(np.max(np.abs(saved[jax.tree_util.keystr(p)] - np.asarray(leaf))))
               for p, leaf in flat)
    net_s, local_s = float(np.median(wire)), float(np.median(local[1:]))
    flower_s = flower(workdir, rounds, hidden) if with_flower else None
    return {"model_bytes": model_bytes, "hidden": hidden, "rounds": rounds,
            "flower_round_s": flower_s,
            "median_flower_s": None if flower_s is None else float(np.median(flower_s)),
            "networked_round_s": wire, "in_process_round_s": local[1:],
            "median_networked_s": net_s, "median_in_process_s": local_s,
            "ratio": net_s / local_s,
            "transfer_mb_per_s": 2 * model_bytes / 1e6 / max(net_s - local_s, 1e-9),
            "networked_wall_s": wall, "max_abs_diff": diff,
            "benchmark_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", default="0.3,10,100", help="model sizes in MB, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up)")
    p.add_argument("--flower", action="store_true",
                   help="also run the rounds on Flower's Deployment Runtime")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mb in (float(m) for m in args.mb.split(",")):
            r = row(mb, args.rounds, Path(tmp), args.flower)
            rows.append(r)
            flower_text = "" if r["median_flower_s"] is None else \
                f", Flower {r['median_flower_s']:.2f} s"
            print(f"{r['model_bytes'] / 1e6:.1f} MB model: round {r['median_networked_s']:.2f} s "
                  f"networked vs {r['median_in_process_s']:.2f} s in-process "
                  f"(x{r['ratio']:.2f}){flower_text}; max abs diff {r['max_abs_diff']:g}",
                  flush=True)
    for r in rows[1:]:
        extra = 2 * (r["model_bytes"] - rows[0]["model_bytes"]) / 1e6
        for name in ("networked", "flower"):
            if r[f"median_{name}_s"] is not None:
                r[f"marginal_{name}_mb_per_s"] = extra / max(
                    r[f"median_{name}_s"] - rows[0][f"median_{name}_s"], 1e-9)
        print(f"{r['model_bytes'] / 1e6:.1f} MB over {rows[0]['model_bytes'] / 1e6:.1f} MB: "
              + ", ".join(f"{name} {r[f'marginal_{name}_mb_per_s']:.0f} MB/s"
                          for name in ("networked", "flower")
                          if f"marginal_{name}_mb_per_s" in r), flush=True)
    record = {"benchmark": "node_transfer", "date": dt.date.today().isoformat(),
              "machine": timing.machine(), "command": " ".join(sys.argv), "rows": rows}
    timing.RESULTS_DIR.mkdir(exist_ok=True)
    (timing.RESULTS_DIR / "node_transfer.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
