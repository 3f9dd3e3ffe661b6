"""``kill -9`` of the coordinator process in each phase, then ``--restore`` from its SQLite
store: the last completed round's model is served byte-identical, the round id is larger,
and the next round ends with the exact mean of its accepted updaters' models."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from bbjax.deploy.pet import wire
from bbjax.deploy.pet.participants import local_model, run_participants
from tests.deploy.processes import free_port
from tests.deploy.test_pet_participants import CONFIG, LENGTH


def start(processes, config, port, *extra):
    process = processes("pet", "coordinator", "--config", str(config), "--port", str(port),
                        *extra, name="coordinator")
    process.wait_http(f"http://127.0.0.1:{port}/health")
    return process


def one_round(url):
    seen = {}

    def models(name, params):
        seen[name, params.seed] = model = local_model(name, params)
        return model

    (record,) = asyncio.run(run_participants(url, 12, rounds=1, models=models, timeout=30))
    expected = np.mean([seen[name, record.seed].astype(np.float64)
                        for name in record.updates], axis=0)
    return record, expected


@pytest.mark.parametrize("phase", ["Sum", "Update", "Sum2"])
def test_a_killed_coordinator_restores_its_model_and_continues(processes, tmp_path, phase):
    config = tmp_path / "pet.toml"
    config.write_text(CONFIG.format(sum_prob=0.3, time_min=0.5, length=LENGTH).replace(
        'url = "memory:"', f'url = "sqlite:///{tmp_path / "pet.db"}"'))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    coordinator = start(processes, config, port)
    one_round(url)
    participants = processes("pet", "participants", "-n", "12", "--url", url, "--rounds", "100",
                             "--seed", "7", name="participants")
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/health").json()["phase"] != phase:
        assert time.monotonic() < deadline, coordinator.output()
        time.sleep(0.02)
    participants.kill9()  # first: no message can end the round while the model is read
    health = httpx.get(f"{url}/health").json()
    assert health["phase"] == phase  # a phase lasts time_min = 0.5 s at least
    before = httpx.get(f"{url}/model").content
    coordinator.kill9()
    coordinator = start(processes, config, port, "--restore")
    assert httpx.get(f"{url}/model").content == before
    assert httpx.get(f"{url}/health").json()["round_id"] > health["round_id"]
    record, expected = one_round(url)
    round_id, model = wire.decode_model(httpx.get(f"{url}/model").content, LENGTH)
    assert round_id == record.round_id and len(record.updates) >= 3
    np.testing.assert_allclose(model, expected, rtol=0, atol=1e-9)
