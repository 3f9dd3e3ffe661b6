"""PET participants over HTTP against a coordinator process: a round of 20 whose global model
is the numpy mean of the accepted updaters' models, a participants process killed with
SIGKILL mid-round and restarted from its state directory, and a short load test."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np

from bbjax.deploy.pet import wire
from bbjax.deploy.pet.participants import local_model, run_participants
from tests.deploy.processes import free_port

LENGTH = 8
CONFIG = """
[pet.sum]
prob = {sum_prob}
count_min = 1
count_max = 100
time_min = {time_min}
time_max = 20
[pet.update]
prob = 0.9
count_min = 3
count_max = 1000
time_min = {time_min}
time_max = 20
[pet.sum2]
count_min = 1
count_max = 100
time_min = 0
time_max = 20
[model]
length = {length}
[server]
tick_interval = 0.05
[store]
url = "memory:"
"""


def coordinator(processes, tmp_path, *, sum_prob=0.2, time_min=0.5, length=LENGTH):
    path = tmp_path / "pet.toml"
    path.write_text(CONFIG.format(sum_prob=sum_prob, time_min=time_min, length=length))
    port = free_port()
    process = processes("pet", "coordinator", "--config", str(path), "--port", str(port),
                        name="coordinator")
    url = f"http://127.0.0.1:{port}"
    process.wait_http(f"{url}/health")
    return process, url


def test_twenty_participants_complete_a_round_with_the_exact_mean(processes, tmp_path):
    _, url = coordinator(processes, tmp_path)
    seen = {}

    def models(name, params):
        seen[(name, params.seed)] = model = local_model(name, params)
        return model

    first = httpx.get(f"{url}/health").json()["round_id"]
    records = asyncio.run(run_participants(url, 20, rounds=1, models=models, timeout=60))
    (record,) = records
    assert record.round_id == first and record.sums and len(record.updates) >= 3
    round_id, model = wire.decode_model(httpx.get(f"{url}/model").content, LENGTH)
    assert round_id == first
    expected = np.mean([seen[name, record.seed].astype(np.float64)
                        for name in record.updates], axis=0)
    np.testing.assert_allclose(model, expected, rtol=0, atol=1e-9)


def test_a_killed_participants_process_continues_from_its_state(processes, tmp_path):
    _, url = coordinator(processes, tmp_path, sum_prob=0.3, time_min=1.0)
    state = tmp_path / "state"
    args = ("pet", "participants", "-n", "6", "--url", url, "--state-dir", str(state),
            "--timeout", "60")
    first = processes(*args, name="participants")
    deadline = time.monotonic() + 30
    while len(list(state.glob("*.state"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(state.glob("*.state"))) == 6, first.output()
    round_id = httpx.get(f"{url}/health").json()["round_id"]
    first.kill9()
    assert httpx.get(f"{url}/health").json()["round_id"] == round_id
    second = processes(*args, name="participants")
    assert second.proc.wait(60) == 0, second.output()
    assert f"round {round_id}:" in second.output()
    assert httpx.get(f"{url}/health").json()["round_id"] > round_id


def test_fifty_participants_lose_no_accepted_message(processes, tmp_path):
    _, url = coordinator(processes, tmp_path, sum_prob=0.2, time_min=0.5)
    records = asyncio.run(run_participants(url, 50, rounds=1, timeout=5))
    text = httpx.get(f"{url}/metrics").text
    for record in records:
        counted = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                      if line.startswith("bbjax_pet_messages_total")
                      and f'round="{record.round_id}"' in line and 'kind="accepted"' in line)
        assert counted == record.statuses.count(200) > 0
