"""The coordinator's SQLite store against the coordinator itself and MemoryStore: every tick
of real rounds, a writer killed with SIGKILL, a restart from the store, bad files."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bbjax.deploy.pet.sqlite_store import SqliteStore
from bbjax.deploy.pet.store import MemoryStore, StoredCoordinator, open_store, restore_coordinator
from bbjax.errors import ConfigError, StoreError
from bbjax.protocols.pet import (Accepted, Coordinator, MemoryHost, Tag, make_participants,
                                 seeded_keygen)
from tests.deploy.processes import env
from tests.forced_devices import ROOT
from tests.protocols.pet.roundkit import settings as make_settings
from tests.protocols.pet.roundkit import tolerance

LENGTH = 6


def host_for(coordinator: Coordinator, count: int = 10, seed: int = 0):
    """A MemoryHost of ``count`` participants with random float32 models."""
    participants = make_participants(count)
    rng = np.random.default_rng(seed)
    models = {n: rng.uniform(-1, 1, LENGTH).astype(np.float32) for n in participants}
    return MemoryHost(coordinator, participants, models), models


def assert_matches(stored: StoredCoordinator, coordinator: Coordinator) -> None:
    """``stored`` holds the coordinator's own round, dictionaries, mask votes and model."""
    state = coordinator.state
    assert stored.round_id == state.round_id
    assert stored.seed == state.seed
    assert stored.phase is state.phase
    assert stored.sum_dict == state.sum_dict
    assert stored.seed_dict == {k: v for k, v in state.seed_dict.items() if v}
    assert stored.mask_votes() == state.mask_votes
    if state.global_model is None:
        assert stored.global_model is None and stored.model_round is None
    else:
        np.testing.assert_array_equal(stored.global_model, state.global_model)
        assert stored.global_model.dtype == np.float64


def check_every_tick(store, rounds: int = 2) -> None:
    """Drive a coordinator through ``rounds`` rounds, applying its effects to ``store`` and
    to a MemoryStore after every tick; both load the coordinator's state each time."""
    settings = make_settings(length=LENGTH)
    coordinator = Coordinator(settings, 0.0, keygen=seeded_keygen(b"store"))
    memory = MemoryStore()
    host, _ = host_for(coordinator)
    phases, seen = set(), set()
    while True:
        effects = coordinator.take_effects()
        store.apply(settings, effects)
        memory.apply(settings, effects)
        for loaded in (store.load(settings), memory.load(settings)):
            assert_matches(loaded, coordinator)
        phases.add(coordinator.phase)
        seen |= {name for name in ("sum_dict", "seed_dict", "masks")
                 if getattr(loaded, name)}
        if coordinator.round_id > rounds:
            break
        host.tick()
    assert {p.value for p in phases} == {"Sum", "Update", "Sum2"}
    assert seen == {"sum_dict", "seed_dict", "masks"}
    assert store.load(settings).model_round == rounds


def test_sqlite_matches_the_coordinator_every_tick(tmp_path):
    store = SqliteStore(tmp_path / "pet.db")
    check_every_tick(store)
    store.close()
    reopened = open_store(f"sqlite:///{tmp_path / 'pet.db'}")
    stored = reopened.load(make_settings(length=LENGTH))
    assert stored.round_id == 3 and stored.model_round == 2
    reopened.clear()
    assert reopened.load(make_settings(length=LENGTH)) is None


CHILD = textwrap.dedent("""
    import json, sys
    from bbjax.deploy.pet.sqlite_store import SqliteStore
    from bbjax.protocols.pet import Coordinator, seeded_keygen
    from tests.deploy.test_pet_store import LENGTH, host_for
    from tests.protocols.pet.roundkit import settings as make_settings
    settings = make_settings(length=LENGTH)
    store = SqliteStore(sys.argv[1])
    coordinator = Coordinator(settings, 0.0, keygen=seeded_keygen(b"child"))
    host, _ = host_for(coordinator)
    while not (coordinator.round_id == 2 and coordinator.phase.value == "Update"
               and coordinator.state.seed_dict and any(coordinator.state.seed_dict.values())):
        store.apply(settings, coordinator.take_effects())
        host.tick()
    store.apply(settings, coordinator.take_effects())
    s = coordinator.state
    print(json.dumps({"round_id": s.round_id, "phase": s.phase.value, "seed": s.seed.hex(),
                      "sums": sorted(k.hex() for k in s.sum_dict),
                      "seeds": sum(len(v) for v in s.seed_dict.values()),
                      "model": s.global_model.tolist()}), flush=True)
    store._db.execute("BEGIN IMMEDIATE")  # a write in flight when the process dies
    store._db.execute("DELETE FROM sum_dict")
    print("uncommitted", flush=True)
    sys.stdin.read()
""")


def test_sqlite_survives_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "pet.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             stdin=subprocess.PIPE, env=env(), cwd=str(ROOT))
    try:
        line = child.stdout.readline()
        assert line, "the child exited before committing"
        assert child.stdout.readline() == b"uncommitted\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    expected = json.loads(line)
    stored = SqliteStore(path).load(make_settings(length=LENGTH))
    assert stored.round_id == expected["round_id"] == 2
    assert stored.phase.value == expected["phase"] and stored.seed.hex() == expected["seed"]
    assert sorted(k.hex() for k in stored.sum_dict) == expected["sums"]
    assert sum(len(v) for v in stored.seed_dict.values()) == expected["seeds"] > 0
    np.testing.assert_array_equal(stored.global_model, expected["model"])
    assert stored.model_round == 1


def test_restore_continues_from_the_stored_global_model(tmp_path):
    settings = make_settings(length=LENGTH)
    store = SqliteStore(tmp_path / "pet.db")
    first = Coordinator(settings, 0.0, keygen=seeded_keygen(b"first"))
    host, _ = host_for(first, seed=1)
    while first.round_id == 1:
        store.apply(settings, first.take_effects())
        host.tick()
    store.apply(settings, first.take_effects())
    store.close()
    store = SqliteStore(tmp_path / "pet.db")
    stored = store.load(settings)
    assert stored.model_round == 1 and stored.round_id == 2

    coordinator = restore_coordinator(store, settings, 100.0, keygen=seeded_keygen(b"second"))
    assert coordinator.round_id == stored.round_id + 1
    np.testing.assert_array_equal(coordinator.global_model(), first.global_model())
    assert store.load(settings).round_id == coordinator.round_id
    assert store.load(settings).model_round == 1

    host, models = host_for(coordinator, seed=2)
    host.now = 100.0
    result = host.run_round()
    assert result.failure is None and result.round_id == stored.round_id + 1
    updaters = [d.sender for d in host.deliveries
                if d.round_id == result.round_id and d.outcome == Accepted(Tag.UPDATE)]
    mean = np.mean([models[n].astype(np.float64) for n in updaters], axis=0)
    assert len(updaters) >= 3
    assert np.abs(result.global_model - mean).max() <= tolerance(
        coordinator, len(updaters), len(updaters), mean)


def test_sqlite_refuses_other_settings(tmp_path):
    settings = make_settings(length=LENGTH)
    store = SqliteStore(tmp_path / "pet.db")
    coordinator = Coordinator(settings, 0.0)
    store.apply(settings, coordinator.take_effects())
    other = make_settings(length=LENGTH + 1)
    with pytest.raises(StoreError, match="other settings"):
        store.load(other)
    with pytest.raises(StoreError, match="other settings"):
        store.apply(other, Coordinator(other, 0.0).take_effects())
    assert store.load(settings).round_id == 1


def test_sqlite_refuses_files_that_are_no_store(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all " * 100)
    with pytest.raises(StoreError, match="cannot open.*not a database"):
        SqliteStore(garbage)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a bbjax coordinator store"):
        SqliteStore(foreign)
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(tmp_path / "missing-dir" / "pet.db")


def test_empty_store_needs_a_round_start(tmp_path):
    settings = make_settings(length=LENGTH)
    store = SqliteStore(tmp_path / "pet.db")
    assert store.load(settings) is None
    coordinator = Coordinator(settings, 0.0)
    coordinator.take_effects()
    coordinator.shutdown(1.0)
    with pytest.raises(StoreError, match="RoundStarted"):
        store.apply(settings, coordinator.take_effects())
    assert store.load(settings) is None


def test_open_store_refuses_other_schemes():
    with pytest.raises(ConfigError, match="ftp://x"):
        open_store("ftp://x")
    assert isinstance(open_store("memory:"), MemoryStore)


def test_sqlite_refuses_damaged_contents(tmp_path):
    settings = make_settings(length=LENGTH)
    path = tmp_path / "pet.db"
    store = SqliteStore(path)
    store.apply(settings, Coordinator(settings, 0.0).take_effects())
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET phase = 'Bogus'")
    with pytest.raises(StoreError, match="unknown phase 'Bogus'"):
        store.load(settings)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)  # the SQLite header
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(path)
