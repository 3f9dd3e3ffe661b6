"""The PET coordinator served over HTTP on loopback: a whole round, hostile requests (each
answered with its status, counted in /metrics, leaving /health and /sums as they were), and
the CLI (a start and a config error)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest

from bbjax.deploy.pet import wire
from bbjax.deploy.pet.config import ServedCoordinatorConfig, load_config
from bbjax.deploy.pet.server import create_app
from bbjax.deploy.pet.store import MemoryStore, restore_coordinator
from bbjax.deploy.serving import Listen, uvicorn_server
from bbjax.errors import ConfigError, StoreError
from bbjax.protocols.pet.crypto import EncryptKeyPair
from bbjax.protocols.pet.message import seal_message
from bbjax.protocols.pet.multipart import encode_messages
from bbjax.protocols.pet.settings import MIN_MESSAGE_SIZE
from tests.deploy.processes import free_port
from tests.protocols.pet.roundkit import (
    eligible,
    keygen,
    mask_of,
    seal_all,
    settings,
    sum2_payload,
    sum_payload,
    update_payload,
    weighted_mean,
)

MAX_BODY = 4096
BODY_TIMEOUT = 1.0


class FailingStore(MemoryStore):
    """A memory store whose transactions fail once ``broken`` is set."""

    broken = False

    def apply(self, settings, effects):
        if self.broken and effects:
            raise StoreError("the disk is gone")
        super().apply(settings, effects)


class Served:
    """A coordinator served in a background thread, with a hand-moved clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.settings = settings(time=(1.0, 100.0), sum_prob=0.5)
        self.store = FailingStore()
        self.coordinator = restore_coordinator(self.store, self.settings, self.now,
                                               keygen=keygen())
        listen = Listen(port=free_port())
        config = ServedCoordinatorConfig(self.settings, listen, MAX_BODY, BODY_TIMEOUT, 0.02,
                                         "memory:")
        app = create_app(self.coordinator, self.store, config, lambda: self.now)
        self.server = uvicorn_server(app, listen)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{listen.port}"
        self.port = listen.port
        self.client = httpx.Client(base_url=self.url, timeout=10.0)
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def post(self, body: bytes) -> httpx.Response:
        return self.client.post("/message", content=body)

    def advance(self, seconds: float) -> None:
        """Move the clock and wait for the ticker to see it."""
        self.now += seconds
        time.sleep(0.2)

    def state(self) -> tuple:
        sums = self.client.get("/sums")
        return self.client.get("/health").json(), sums.status_code, sums.content

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the ``name`` samples in /metrics whose labels include ``labels``."""
        total = 0.0
        for line in self.client.get("/metrics").text.splitlines():
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name and all(f'{k}="{v}"' in head
                                                  for k, v in labels.items()):
                total += float(value)
        return total

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


def messages_metric(served: Served, kind: str, reason: str) -> float:
    return served.metric("bbjax_pet_messages_total", kind=kind, reason=reason)


def in_update_phase(served: Served):
    """Two sum participants accepted, then the clock past Sum's time.min."""
    c = served.coordinator
    sums = eligible("sum", c, 2, b"s")
    ephms = []
    for keys in sums:
        payload, ephm = sum_payload(keys, c)
        ephms.append(ephm)
        assert served.post(seal_all(payload, keys, c)[0]).status_code == 200
    served.advance(1.5)
    assert served.client.get("/health").json()["phase"] == "Update"
    return sums, ephms


def test_a_whole_round_over_http_gives_the_weighted_mean(served):
    c = served.coordinator
    first = c.round_id
    sums, _ = in_update_phase(served)
    assert served.metric("bbjax_pet_sum_participants") == 2
    listed = wire.decode_sums(served.client.get("/sums").content)
    assert set(listed) == {k.public for k in sums}
    rng = np.random.default_rng(0)
    models = [rng.uniform(-1, 1, c.settings.model_length).astype(np.float32) for _ in range(3)]
    seeds = []
    for i, keys in enumerate(eligible("update", c, 3, b"u")):
        payload, seed = update_payload(keys, c, models[i], sums=listed)
        seeds.append(seed)
        assert served.post(seal_all(payload, keys, c)[0]).status_code == 200
    served.advance(1.5)
    assert served.client.get("/health").json()["phase"] == "Sum2"
    for keys in sums:
        got = served.client.get("/seeds", params={"pk": keys.public.hex()})
        assert len(wire.decode_seeds(got.content)) == 3
    mask = mask_of(seeds, c)
    for keys in sums:
        assert served.post(seal_all(sum2_payload(keys, c, mask), keys, c)[0]).status_code == 200
    assert served.metric("bbjax_pet_masks") == 1
    served.advance(1.5)
    round_id, model = wire.decode_model(served.client.get("/model").content,
                                        c.settings.model_length)
    assert round_id == first
    np.testing.assert_allclose(model, weighted_mean(models, [1, 1, 1]), atol=1e-6)
    assert served.client.get("/health").json() == {"round_id": first + 1, "phase": "Sum"}
    assert served.store.load(served.settings).model_round == first


def test_bad_signature_is_rejected(served):
    c = served.coordinator
    keys = eligible("sum", c, 1)[0]
    raw = bytearray(encode_messages(sum_payload(keys, c)[0], keys, c.round_params().pk,
                                    None)[0])
    raw[0] ^= 1
    before = served.state()
    got = served.post(seal_message(bytes(raw), c.round_params().pk))
    assert (got.status_code, got.json()["reason"]) == (400, "bad_signature")
    assert messages_metric(served, "rejected", "bad_signature") == 1
    assert served.state() == before


def test_an_update_during_sum_is_discarded(served):
    c = served.coordinator
    keys = eligible("update", c, 1)[0]
    payload, _ = update_payload(keys, c, np.zeros(c.settings.model_length), sums={})
    before = served.state()
    got = served.post(seal_all(payload, keys, c)[0])
    assert (got.status_code, got.json()["reason"]) == (409, "wrong_phase")
    assert messages_metric(served, "discarded", "wrong_phase") == 1
    assert served.state() == before


def test_a_replayed_sum_and_a_second_sum_of_a_participant_are_refused(served):
    c = served.coordinator
    keys = eligible("sum", c, 1)[0]
    sealed = seal_all(sum_payload(keys, c)[0], keys, c)[0]
    assert served.post(sealed).json() == {"outcome": "accepted", "tag": "sum", "detail": ""}
    before = served.state()
    for body in (sealed, seal_all(sum_payload(keys, c)[0], keys, c)[0]):
        got = served.post(body)
        assert (got.status_code, got.json()["reason"]) == (400, "duplicate_participant")
    assert messages_metric(served, "rejected", "duplicate_participant") == 2
    assert served.metric("bbjax_pet_sum_participants") == 1
    assert served.state() == before


def test_a_message_for_another_coordinator_key_is_rejected(served):
    c = served.coordinator
    keys = eligible("sum", c, 1)[0]
    other = EncryptKeyPair.generate().public
    named_other = encode_messages(sum_payload(keys, c)[0], keys, other, None)[0]
    before = served.state()
    got = served.post(seal_message(named_other, c.round_params().pk))
    assert (got.status_code, got.json()["reason"]) == (400, "wrong_coordinator_key")
    got = served.post(seal_all(sum_payload(keys, c)[0], keys, c, pk=other)[0])
    assert (got.status_code, got.json()["reason"]) == (400, "undecryptable")
    got = served.post(b"garbage" * 40)
    assert (got.status_code, got.json()["reason"]) == (400, "undecryptable")
    assert messages_metric(served, "rejected", "wrong_coordinator_key") == 1
    assert messages_metric(served, "rejected", "undecryptable") == 2
    assert served.state() == before


def test_oversized_bodies_are_refused_declared_or_chunked(served):
    before = served.state()
    got = served.post(b"x" * (MAX_BODY + 1))
    assert got.status_code == 413
    got = served.client.post("/message", content=iter([b"x" * 1000] * 5))
    assert got.status_code == 413
    assert served.metric("bbjax_pet_http_refused_total", reason="oversized") == 2
    assert served.state() == before


def test_truncated_and_inconsistent_multipart_messages_add_nothing(served):
    c = served.coordinator
    keys = eligible("sum", c, 1)[0]
    pk = c.round_params().pk
    chunks = encode_messages(sum_payload(keys, c)[0], keys, pk, MIN_MESSAGE_SIZE, message_id=7)
    assert len(chunks) > 1
    before = served.state()
    for chunk in chunks[:-1]:
        assert served.post(seal_message(chunk, pk)).status_code == 202
    other = encode_messages(sum_payload(keys, c)[0], keys, pk, MIN_MESSAGE_SIZE, message_id=7)
    changed = next(i for i in range(len(chunks) - 1) if other[i] != chunks[i])
    got = served.post(seal_message(other[changed], pk))
    assert (got.status_code, got.json()["reason"]) == (400, "multipart_inconsistent")
    assert messages_metric(served, "buffered", "") == len(chunks) - 1
    assert messages_metric(served, "rejected", "multipart_inconsistent") == 1
    assert served.metric("bbjax_pet_sum_participants") == 0
    assert served.state() == before


def test_a_slow_loris_body_times_out_while_others_are_served(served):
    before = served.state()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(b"POST /message HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n"
                  + b"x" * 200)
        assert served.client.get("/health").status_code == 200
        start = time.monotonic()
        answer = s.recv(4096)
        waited = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert waited < BODY_TIMEOUT + 1.0
    assert served.metric("bbjax_pet_http_refused_total", reason="body_timeout") == 1
    assert served.state() == before


def test_bad_seeds_queries_are_refused(served):
    in_update_phase(served)
    before = served.state()
    for pk in ("zz" * 32, "ab" * 31, ""):
        assert served.client.get("/seeds", params={"pk": pk}).status_code == 400
    assert served.metric("bbjax_pet_http_refused_total", reason="bad_query") == 3
    assert served.state() == before


def test_a_failing_store_turns_the_server_to_503_without_acknowledging(served):
    c = served.coordinator
    keys = eligible("sum", c, 2)
    served.store.broken = True
    got = served.post(seal_all(sum_payload(keys[0], c)[0], keys[0], c)[0])
    assert got.status_code == 503
    assert served.store.load(served.settings).sum_dict == {}
    served.store.broken = False
    assert served.post(seal_all(sum_payload(keys[1], c)[0], keys[1], c)[0]).status_code == 503
    assert served.client.get("/health").status_code == 503
    assert served.store.load(served.settings).sum_dict == {}


def test_serve_refuses_a_non_empty_store_without_restore(monkeypatch, tmp_path):
    from bbjax.deploy.pet import server

    path = tmp_path / "pet.toml"
    path.write_text(CONFIG)
    config = load_config(path, port=free_port())
    store = MemoryStore()
    restore_coordinator(store, config.settings, 0.0)
    monkeypatch.setattr(server, "open_store", lambda url: store)
    with pytest.raises(ConfigError, match="--restore"):
        server.serve(config, restore=False)


def test_metrics_escape_label_values():
    from bbjax.deploy.pet.metrics import escape

    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


CONFIG = """
[pet.sum]
prob = 0.5
time_min = 0.5
time_max = 10
[model]
length = 4
[server]
tick_interval = 0.05
[store]
url = "memory:"
"""


def test_the_cli_serves_and_stops_on_sigterm(processes, tmp_path):
    path = tmp_path / "pet.toml"
    path.write_text(CONFIG)
    port = free_port()
    process = processes("pet", "coordinator", "--config", str(path), "--port", str(port),
                        name="coordinator")
    process.wait_http(f"http://127.0.0.1:{port}/health")
    params = httpx.get(f"http://127.0.0.1:{port}/params").content
    assert len(params) == 92
    assert process.stop() == 0


def test_a_bad_config_field_exits_2_with_one_line(processes, tmp_path):
    path = tmp_path / "pet.toml"
    path.write_text(CONFIG.replace("prob = 0.5", "prob = 1.5"))
    process = processes("pet", "coordinator", "--config", str(path), name="bad")
    assert process.proc.wait(60) == 2
    out = process.output().strip().splitlines()
    assert len(out) == 1 and "sum.prob" in out[0], out


@pytest.mark.parametrize("toml, field", [
    ("[pet.sum]\nprobability = 0.5\n", "pet.sum.probability"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[pet.sum2]\nprob = 0.5\n", "pet.sum2.prob"),
    ("[server]\nbody_timeout = -1\n", "server.body_timeout"),
])
def test_load_config_names_the_bad_field(tmp_path, toml, field):
    path = tmp_path / "pet.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == field


def test_load_config_refuses_a_missing_file(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "none.toml")


@pytest.mark.slow
def test_the_cli_refuses_a_used_store_without_restore_and_restores_with_it(processes,
                                                                            tmp_path):
    path = tmp_path / "pet.toml"
    path.write_text(CONFIG)
    store = f"sqlite:///{tmp_path / 'pet.db'}"
    port = free_port()
    first = processes("pet", "coordinator", "--config", str(path), "--port", str(port),
                      "--store", store, name="first")
    first.wait_http(f"http://127.0.0.1:{port}/health")
    round_id = httpx.get(f"http://127.0.0.1:{port}/health").json()["round_id"]
    assert first.stop() == 0
    refused = processes("pet", "coordinator", "--config", str(path), "--port", str(port),
                        "--store", store, name="refused")
    assert refused.proc.wait(60) == 2
    assert "--restore" in refused.output()
    again = processes("pet", "coordinator", "--config", str(path), "--port", str(port),
                      "--store", store, "--restore", name="again")
    again.wait_http(f"http://127.0.0.1:{port}/health")
    assert httpx.get(f"http://127.0.0.1:{port}/health").json()["round_id"] > round_id
