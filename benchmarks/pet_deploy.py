"""PET over HTTP on localhost: a coordinator process (``bbjax pet coordinator``) and
in-process participants (``bbjax.deploy.pet.participants``).

* Round wall time: for N in ``--sizes`` participants and a model of ``--length`` weights,
  seconds from the first participant's start until the coordinator's round id advances
  (sum probability min(0.5, 5/N), update 0.9, every phase ``time_min`` 0: the Sum phase
  ends at the first Sum, the Update phase once 80% of the expected updaters were accepted
  (at least 3), Sum2 at the first Sum2).
* Load: ``--load`` concurrent clients, each a sum participant re-posting its sealed Sum
  message for ``--duration`` seconds (the first is accepted, the rest answered 409 after
  the full decrypt + verify path): messages/s and the p50 / p99 POST latency.

Writes benchmarks/results/pet_deploy.json (RESULTS.md is left alone).

    python benchmarks/pet_deploy.py [--sizes 10,100,1000] [--length 100000]
        [--load 50] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bbjax.deploy.pet.participants import identity, run_participants
from bbjax.protocols.pet.participant import Participant, View
from bbjax.protocols.pet.round_params import RoundParameters
from bbjax.protocols.pet.settings import ParticipantSettings

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[pet.sum]
prob = {sum_prob}
count_min = 1
count_max = {count}
time_min = 0
time_max = 600
[pet.update]
prob = 0.9
count_min = {updates}
count_max = {count}
time_min = 0
time_max = 600
[pet.sum2]
count_min = {sums}
count_max = {count}
time_min = 0
time_max = 600
[model]
length = {length}
[server]
tick_interval = 0.02
max_body_bytes = {body}
[store]
url = "memory:"
"""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,100,1000", help="participants per round, comma-separated")
    p.add_argument("--length", type=int, default=100_000, help="model weights")
    p.add_argument("--load", type=int, default=50, help="concurrent clients of the load test")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of the load test")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coordinator(config: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    path, port = tmp / f"pet-{time.monotonic_ns()}.toml", free_port()
    path.write_text(config)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "bbjax", "pet", "coordinator", "--config",
                             str(path), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the coordinator did not start")


def round_row(n: int, length: int, tmp: Path) -> dict:
    sum_prob = min(0.5, 5 / n)
    updates = max(3, int(0.8 * 0.9 * n * (1 - sum_prob)))
    config = CONFIG.format(sum_prob=sum_prob, count=n, updates=updates, sums=1,
                           length=length, body=64 * 2**20)
    proc, url = coordinator(config, tmp)
    try:
        t0 = time.perf_counter()
        (record,) = asyncio.run(run_participants(url, n, rounds=1, timeout=1800))
        seconds = time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
    return {"participants": n, "length": length, "seconds": seconds,
            "sums": len(record.sums), "updates": len(record.updates),
            "messages": len(record.statuses)}


async def load(url: str, clients: int, duration: float) -> dict:
    params = RoundParameters.from_bytes(httpx.get(f"{url}/params").content)
    bodies, index = [], 0
    while len(bodies) < clients:  # participants the round selects for the sum task
        p = Participant(ParticipantSettings(identity(1, index), 1, None))
        index += 1
        for _ in range(4):  # NewRound -> Sum -> SendingSum puts the Sum in the outbox
            if p.outbox is not None:
                break
            p.step(View(round_params=params))
        if p.outbox is not None and p.task == "sum":
            bodies.append(p.outbox)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    end = time.perf_counter() + duration

    async def client(http: httpx.AsyncClient, body: bytes) -> None:
        while time.perf_counter() < end:
            t = time.perf_counter()
            response = await http.post(f"{url}/message", content=body)
            latencies.append(time.perf_counter() - t)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients),
                                 timeout=30) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http, b) for b in bodies))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1e3
    return {"clients": clients, "duration": duration, "messages": len(latencies),
            "messages_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def main() -> None:
    args = parse()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [round_row(int(n), args.length, Path(tmp)) for n in args.sizes.split(",")]
        for row in rounds:
            print(f"N={row['participants']:>5} length {row['length']}: round {row['seconds']:.2f} s "
                  f"({row['sums']} sums, {row['updates']} updates, {row['messages']} messages)")
        proc, url = coordinator(CONFIG.format(sum_prob=0.99, count=10**6, updates=3, sums=1,
                                              length=args.length, body=64 * 2**20), Path(tmp))
        try:
            loaded = asyncio.run(load(url, args.load, args.duration))
        finally:
            proc.kill()
            proc.wait()
    print(f"load: {loaded['clients']} clients, {loaded['messages_per_s']:.0f} messages/s, "
          f"p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms")
    record = {"benchmark": "pet_deploy", "date": dt.date.today().isoformat(),
              "machine": timing.machine(), "rounds": rounds, "load": loaded,
              "wall_seconds": time.perf_counter() - t0}
    timing.RESULTS_DIR.mkdir(exist_ok=True)
    path = timing.RESULTS_DIR / "pet_deploy.json"
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
