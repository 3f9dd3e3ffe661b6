"""PET over HTTP on localhost: a coordinator process (``bbjax pet coordinator``, SQLite store)
and in-process participants (``bbjax.deploy.pet.participants``).

* Round wall time: for N in ``--sizes``, one sum participant and N - 1 update participants
  (picked by the round's sortition, so the round selects exactly them) and a model of
  ``--length`` weights: seconds from the participants' start until the coordinator's round
  id advances. Every phase's count_min and count_max are that phase's number of
  participants and time_min is 0, so each phase ends at its last message, never on a timer.
* Load: ``--load`` concurrent clients posting for ``--duration`` seconds. Each client posts
  fresh sealed Sum messages of distinct sum participants (up to ``--pool`` in all; each is
  decrypted, verified, accepted and committed to SQLite before its 200), then re-posts its
  last one (decrypted, verified and rejected as a second Sum of that participant: 400).
  Every client has its own connection, opened before the clock starts. Messages/s and the p50 / p99 POST
  latency, overall and of the accepted ones. After the run the coordinator is killed with
  SIGKILL and its SQLite store is read back: it must hold every sum answered 200.

Writes benchmarks/results/pet_deploy.json (RESULTS.md is left alone).

    python benchmarks/pet_deploy.py [--sizes 10,100,1000] [--length 100000]
        [--load 100,1000] [--duration 60] [--pool 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bbjax.deploy.pet.config import load_config
from bbjax.deploy.pet.participants import identity, run_participants
from bbjax.deploy.pet.store import open_store
from bbjax.protocols.pet.participant import Participant, View
from bbjax.protocols.pet.round_params import RoundParameters
from bbjax.protocols.pet.settings import ParticipantSettings
from bbjax.protocols.pet.sortition import select_task

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[pet.sum]
prob = {sum_prob}
count_min = {sums}
count_max = {sums}
time_min = 0
time_max = 3600
[pet.update]
prob = 1.0
count_min = {updates}
count_max = {updates}
time_min = 0
time_max = 3600
[pet.sum2]
count_min = {sums}
count_max = {sums}
time_min = 0
time_max = 3600
[model]
length = {length}
[server]
tick_interval = 0.02
max_body_bytes = {body}
[store]
url = "sqlite:///{db}"
"""
BODY_BYTES = 64 * 2**20


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,100,1000", help="participants per round, comma-separated")
    p.add_argument("--length", type=int, default=100_000, help="model weights")
    p.add_argument("--load", default="100,1000", help="concurrent clients of the load tests")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of each load test")
    p.add_argument("--pool", type=int, default=20_000,
                   help="distinct Sum messages of each load test")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coordinator(config: str, tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    """A started coordinator process, its URL and its config file."""
    path, port = tmp / f"pet-{time.monotonic_ns()}.toml", free_port()
    path.write_text(config.replace("{db}", str(path.with_suffix(".db"))))
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "bbjax", "pet", "coordinator", "--config",
                             str(path), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url, path
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the coordinator did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def config(sums: int, updates: int, length: int, sum_prob: float = 0.5) -> str:
    return CONFIG.format(sum_prob=sum_prob, sums=sums, updates=updates, length=length,
                         body=BODY_BYTES, db="{db}")


def cast(params: RoundParameters, sums: int, updates: int) -> list[int]:
    """Participant indices that ``params``' sortition makes ``sums`` sum participants and
    ``updates`` update participants (the first of each, in index order)."""
    picked: dict[str, list[int]] = {"sum": [], "update": []}
    want = {"sum": sums, "update": updates}
    index = 0
    while any(len(picked[t]) < want[t] for t in want):
        task = select_task(identity(0, index), params)
        if task is not None and len(picked[task]) < want[task]:
            picked[task].append(index)
        index += 1
    return picked["sum"] + picked["update"]


def round_row(n: int, length: int, tmp: Path) -> dict:
    proc, url, _ = coordinator(config(1, n - 1, length), tmp)
    try:
        params = RoundParameters.from_bytes(httpx.get(f"{url}/params").content)
        indices = cast(params, 1, n - 1)
        t0 = time.perf_counter()
        (record,) = asyncio.run(run_participants(url, n, indices=indices, rounds=1,
                                                 timeout=3600))
        seconds = time.perf_counter() - t0
    finally:
        stop(proc)
    return {"participants": n, "length": length, "seconds": seconds,
            "sums": len(record.sums), "updates": len(record.updates),
            "sum2s": len(record.sum2s), "messages": len(record.statuses)}


def sum_messages(params: RoundParameters, count: int) -> list[bytes]:
    """The sealed Sum messages of the first ``count`` sum participants of the round."""
    bodies, index = [], 0
    while len(bodies) < count:
        keys = identity(1, index)
        index += 1
        if select_task(keys, params) != "sum":
            continue
        p = Participant(ParticipantSettings(keys, 1, None))
        while p.outbox is None:  # NewRound -> Sum -> SendingSum puts the Sum in the outbox
            p.step(View(round_params=params))
        bodies.append(p.outbox)
    return bodies


async def post_for(url: str, pools: list[list[bytes]], duration: float) -> dict:
    """Each pool's client, on a connection of its own (opened before the clock starts),
    posts its bodies in turn, then its last again, for ``duration`` seconds."""
    latencies: dict[int, list[float]] = {}
    plain = ssl.create_default_context()  # one context: httpx builds one per client else
    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=120,
                                 verify=plain) for _ in pools]
    await asyncio.gather(*(http.get(f"{url}/health") for http in clients))

    async def client(http: httpx.AsyncClient, pool: list[bytes]) -> None:
        sent = 0
        while time.perf_counter() < end:
            body = pool[min(sent, len(pool) - 1)]
            sent += 1
            t = time.perf_counter()
            status = (await http.post(f"{url}/message", content=body)).status_code
            latencies.setdefault(status, []).append(time.perf_counter() - t)

    t0 = time.perf_counter()
    end = t0 + duration
    await asyncio.gather(*(client(http, pool) for http, pool in zip(clients, pools)))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(http.aclose() for http in clients))
    every = np.concatenate([np.array(v) for v in latencies.values()]) * 1e3
    accepted = np.array(latencies.get(200, [np.nan])) * 1e3
    return {"clients": len(pools), "duration": duration, "wall_s": wall,
            "messages": int(every.size), "messages_per_s": every.size / wall,
            "p50_ms": float(np.percentile(every, 50)), "p99_ms": float(np.percentile(every, 99)),
            "accepted": len(latencies.get(200, [])),
            "accepted_per_s": len(latencies.get(200, [])) / wall,
            "accepted_p50_ms": float(np.percentile(accepted, 50)),
            "accepted_p99_ms": float(np.percentile(accepted, 99)),
            "statuses": {str(k): len(v) for k, v in sorted(latencies.items())}}


def load_row(clients: int, duration: float, pool: int, length: int, tmp: Path) -> dict:
    never = 10**6  # the Sum phase never fills and never times out during the test
    proc, url, path = coordinator(config(never, 3, length, sum_prob=0.99), tmp)
    try:
        params = RoundParameters.from_bytes(httpx.get(f"{url}/params").content)
        bodies = sum_messages(params, max(pool, clients))
        pools = [bodies[i::clients] for i in range(clients)]
        row = asyncio.run(post_for(url, pools, duration))
    finally:
        stop(proc)  # SIGKILL: what the store holds now is what survives a crash
    served = load_config(path)
    stored = open_store(served.store_url).load(served.settings)
    row["stored_sums"] = len(stored.sum_dict)
    row["accepted_lost"] = row["accepted"] - row["stored_sums"]
    return row


def main() -> None:
    args = parse()
    t0 = time.perf_counter()
    rounds, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(n) for n in args.sizes.split(",") if n):
            row = round_row(n, args.length, Path(tmp))
            rounds.append(row)
            print(f"N={n:>5} length {row['length']}: round {row['seconds']:.2f} s ({row['sums']} "
                  f"sums, {row['updates']} updates, {row['sum2s']} sum2s, {row['messages']} "
                  "messages)", flush=True)
        for clients in (int(c) for c in args.load.split(",") if c):
            row = load_row(clients, args.duration, args.pool, args.length, Path(tmp))
            loads.append(row)
            print(f"load: {clients} clients × {args.duration:g} s: {row['messages_per_s']:.0f} "
                  f"messages/s (p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms); "
                  f"accepted {row['accepted']} ({row['accepted_per_s']:.0f}/s, p50 "
                  f"{row['accepted_p50_ms']:.1f} ms, p99 {row['accepted_p99_ms']:.1f} ms), "
                  f"{row['stored_sums']} in the store after SIGKILL", flush=True)
    record = {"benchmark": "pet_deploy", "date": dt.date.today().isoformat(),
              "machine": timing.machine(), "command": " ".join(sys.argv),
              "rounds": rounds, "load": loads, "wall_seconds": time.perf_counter() - t0}
    timing.RESULTS_DIR.mkdir(exist_ok=True)
    path = timing.RESULTS_DIR / "pet_deploy.json"
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
