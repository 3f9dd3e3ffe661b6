"""The coordinator's effects (what a store keeps) replay to its state, and a coordinator
created at a later round with a global model (a restart) starts there."""

from __future__ import annotations

import numpy as np
import pytest

from bbjax.errors import InvalidArgument
from bbjax.protocols.pet import Coordinator, MemoryHost, Phase, make_participants
from bbjax.protocols.pet.coordinator import (
    MaskAdded,
    ModelUnmasked,
    PhaseStarted,
    RoundStarted,
    SumAdded,
    UpdateAdded,
)
from bbjax.protocols.pet.crypto import next_round_seed
from tests.protocols.pet.roundkit import keygen, settings


def _replay(effects):
    """An independent store: the dictionaries rebuilt from the effects alone."""
    table = {"round": None, "seed": None, "phase": None, "sums": {}, "seeds": {}, "masks": {},
             "model": None}
    for e in effects:
        if isinstance(e, RoundStarted):
            table.update(round=e.round_id, seed=e.seed, phase=Phase.SUM, sums={}, seeds={},
                         masks={})
        elif isinstance(e, PhaseStarted):
            table["phase"] = e.phase
        elif isinstance(e, SumAdded):
            table["sums"][e.participant_pk] = e.ephm_pk
        elif isinstance(e, UpdateAdded):
            for sum_pk, seed in e.local_seed_dict.items():
                table["seeds"].setdefault(sum_pk, {})[e.participant_pk] = seed
        elif isinstance(e, MaskAdded):
            table["masks"][e.participant_pk] = e.mask
        elif isinstance(e, ModelUnmasked):
            table["model"] = (e.round_id, e.model)
    return table


def test_effects_rebuild_every_persisted_field_at_every_tick():
    coordinator = Coordinator(settings(length=6), 0.0, keygen=keygen(b"eff"))
    rng = np.random.default_rng(3)
    participants = make_participants(12, label=b"eff")
    models = {n: rng.uniform(-1, 1, 6).astype(np.float32) for n in participants}
    host = MemoryHost(coordinator, participants, models)
    effects = list(coordinator.take_effects())
    seen_phases = set()
    for _ in range(120):
        host.tick()
        effects += coordinator.take_effects()
        table, s = _replay(effects), coordinator.state
        seen_phases.add(s.phase)
        assert (table["round"], table["seed"], table["phase"]) == (s.round_id, s.seed, s.phase)
        assert table["sums"] == s.sum_dict
        assert table["seeds"] == {k: v for k, v in s.seed_dict.items() if v}
        votes = {}
        for mask in table["masks"].values():
            votes[mask] = votes.get(mask, 0) + 1
        assert votes == s.mask_votes
        if s.global_model is not None:
            np.testing.assert_array_equal(table["model"][1], s.global_model)
        if s.round_id == 3:
            break
    assert {Phase.SUM, Phase.UPDATE, Phase.SUM2} <= seen_phases
    assert table["model"][0] == 2  # round 2's model, unmasked before round 3 began


def test_a_coordinator_restarted_at_a_later_round_keeps_the_model_and_chains_the_seed():
    cfg = settings(length=4)
    model = np.array([0.5, -0.25, 1.0, 0.0])
    stored_seed = bytes(range(32))
    gen = keygen(b"restart")
    coordinator = Coordinator(cfg, 10.0, keygen=gen, initial_seed=stored_seed, round_id=8,
                              global_model=model)
    assert (coordinator.round_id, coordinator.phase) == (8, Phase.SUM)
    np.testing.assert_array_equal(coordinator.global_model(), model)
    keys = keygen(b"restart")()
    assert coordinator.state.seed == next_round_seed(keys.secret, stored_seed, 0.4, 0.9)
    assert coordinator.take_effects() == [RoundStarted(8, coordinator.state.seed)]
    restored = Coordinator.restore(coordinator.state_bytes(), cfg)
    np.testing.assert_array_equal(restored.global_model(), model)


@pytest.mark.parametrize("kwargs", [{"round_id": 0}, {"round_id": True},
                                    {"global_model": np.zeros(3)},
                                    {"global_model": np.array([0, 0, np.nan, 0])},
                                    {"initial_seed": b"short"}])
def test_bad_restart_arguments_are_refused(kwargs):
    with pytest.raises(InvalidArgument):
        Coordinator(settings(length=4), 0.0, **kwargs)
