"""The coordinator's Redis store: the same every-tick checks as SQLite against a real
``redis-server`` on loopback, other settings, an unreachable server, and an append-only
server killed with SIGKILL."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bbjax.deploy.pet.redis_store import RedisStore
from bbjax.deploy.pet.store import open_store
from bbjax.errors import StoreError
from bbjax.protocols.pet import Coordinator, seeded_keygen
from tests.deploy.processes import free_port
from tests.deploy.redis_server import REDIS_SERVER, RedisServer
from tests.deploy.test_pet_store import LENGTH, assert_matches, check_every_tick, host_for
from tests.protocols.pet.roundkit import settings as make_settings

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


@pytest.fixture
def server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def test_redis_matches_the_coordinator_every_tick(server):
    store = open_store(server.url)
    assert isinstance(store, RedisStore)
    check_every_tick(store)
    store.clear()
    assert store.load(make_settings(length=LENGTH)) is None
    store.close()


def test_redis_refuses_other_settings(server):
    settings, other = make_settings(length=LENGTH), make_settings(length=LENGTH + 1)
    store = RedisStore(server.url)
    store.apply(settings, Coordinator(settings, 0.0).take_effects())
    with pytest.raises(StoreError, match="other settings"):
        store.load(other)
    with pytest.raises(StoreError, match="other settings"):
        store.apply(other, Coordinator(other, 0.0).take_effects())
    assert store.load(settings).round_id == 1


def test_redis_prefixes_keep_stores_apart(server):
    settings = make_settings(length=LENGTH)
    a, b = RedisStore(server.url), RedisStore(server.url, prefix="other:")
    a.apply(settings, Coordinator(settings, 0.0).take_effects())
    assert b.load(settings) is None and a.load(settings).round_id == 1


def test_unreachable_redis_names_the_url():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreError, match=re.escape(url)):
        RedisStore(url, timeout=1.0)


def test_append_only_redis_survives_sigkill(tmp_path):
    settings = make_settings(length=LENGTH)
    server = RedisServer(tmp_path, appendonly=True)
    try:
        store = RedisStore(server.url)
        coordinator = Coordinator(settings, 0.0, keygen=seeded_keygen(b"aof"))
        host, _ = host_for(coordinator)
        while not (coordinator.round_id == 2 and coordinator.state.sum_dict):
            store.apply(settings, coordinator.take_effects())
            host.tick()
        store.apply(settings, coordinator.take_effects())
        store.close()
        server.kill9()
        server.stop()
        server = RedisServer(tmp_path, appendonly=True, port=server.port)
        stored = RedisStore(server.url).load(settings)
        assert_matches(stored, coordinator)
        assert stored.model_round == 1 and stored.global_model is not None
        assert np.isfinite(stored.global_model).all()
    finally:
        server.stop()


def test_empty_redis_store_needs_a_round_start(server):
    settings = make_settings(length=LENGTH)
    store = RedisStore(server.url)
    coordinator = Coordinator(settings, 0.0)
    coordinator.take_effects()
    coordinator.shutdown(1.0)
    with pytest.raises(StoreError, match="RoundStarted"):
        store.apply(settings, coordinator.take_effects())
    assert store.load(settings) is None
