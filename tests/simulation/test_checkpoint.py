"""Simulation checkpoints: k rounds, then resume to n, is the n-round run bit for bit; a
missing, damaged or foreign checkpoint is refused with ``CheckpointError`` naming why."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import bbjax
from bbjax.cli import main
from bbjax.components import Component, Role, flax_model, padded_data_source
from bbjax.dsl import Graph, Module
from bbjax.errors import CheckpointError, SimulationError
from bbjax.modules import FedAvgRound
from bbjax.simulation import Peers, Simulation, checkpoint, simulate
from bbjax.simulation.sharding import peer_mesh, state_shardings
from bbjax.models import LogisticRegression, cross_entropy

KEY = jax.random.PRNGKey(4)


# -- FedAvg with sampled cohorts and dropout: resuming is exact ----------------------------

@pytest.fixture(scope="module")
def fedavg():
    """A FedAvg round over 4 clients, 2 sampled per round, messages lost with p = 0.3, and
    an evaluation of the server's model."""
    rng = np.random.default_rng(0)
    sizes = [7, 12, 20, 30]
    data = bbjax.data.FederatedData.from_clients(
        [rng.normal(size=(n, 6)).astype(np.float32) for n in sizes],
        [rng.integers(0, 3, n).astype(np.int32) for n in sizes])
    model = flax_model(LogisticRegression(6, 3, rngs=nnx.Rngs(0)), optax.sgd(0.3), cross_entropy)
    source = padded_data_source(data.x[0], data.y[0], int(data.sizes[0]), batch_size=5)
    compiled = bbjax.Compiler().bind("model", model).bind("data", source).compile(
        FedAvgRound(local_steps=2))
    clients = Peers(4, init_args={"data": (data.x, data.y, data.sizes)}, cohort=2,
                    dropout=0.3)

    def evaluate(states):
        return {"norm": jnp.sum(states["server"]["model"].params["out"]["kernel"] ** 2)}

    return dict(compiled=compiled, population={"server": 1, "client": clients},
                bindings={"model": model, "data": source}), evaluate


def _assert_same(a, b):
    assert list(a.metrics) == list(b.metrics)
    for name in a.metrics:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for x, y in zip(jax.tree.leaves(a.states), jax.tree.leaves(b.states), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_three_rounds_then_resuming_to_five_is_the_five_round_run(fedavg, tmp_path):
    run, evaluate = fedavg
    # one call of 5 rounds, evaluated after the last
    whole = simulate(**run, rounds=5, key=KEY, evaluate=evaluate, eval_every=5)
    # calls of 2 and 1 rounds, checkpointed after rounds 2 and 3
    simulate(**run, rounds=3, key=KEY, checkpoint_dir=tmp_path, checkpoint_every=2,
             config={"note": "first"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]
    # from round 3: calls of 1 and 1 round, checkpointed after rounds 4 and 5
    resumed = simulate(**run, rounds=5, key=KEY, evaluate=evaluate, eval_every=5,
                       resume=tmp_path, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "5"]  # the last two kept
    _assert_same(resumed, whole)
    assert len(set(whole["participants"])) > 1  # cohorts and dropout vary by round
    assert resumed.config == {"note": "first"}  # the checkpoint's, when none is given


# -- a cheap round for the refusals -------------------------------------------------------

ZERO = jnp.zeros(1)
HOLDER = Component(Role.PROTOCOL, lambda key, v=ZERO: {"v": v},
                   {"value": lambda s: (s, s["v"]), "set": lambda s, v: ({"v": v}, ())},
                   "holder")
ZEROS = jnp.zeros(2)
WIDE = Component(Role.PROTOCOL, lambda key, v=ZEROS: {"v": v}, HOLDER.methods,
                 "holder")


class Halve(Module):
    """Each round ``v <- v / 2 + factor``; outputs ``v``'s sum."""

    name = "halve"
    factor = 1.0

    def body(self, g: Graph) -> None:
        v = g.slot("state").value() * 0.5 + self.factor
        g.slot("state").set(v)
        g.output("value", jnp.sum(v))


class HalvePlusTwo(Halve):
    factor = 2.0


def _cheap(module: type[Module] = Halve, peers: Peers | None = None, holder=HOLDER):
    compiled = bbjax.Compiler().bind("state", holder).compile(module())
    width = 2 if holder is WIDE else 1
    peers = peers or Peers(3, init_args={"state": (np.ones((3, width), np.float32),)})
    return dict(compiled=compiled, population={"self": peers}, bindings={"state": holder})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint of the cheap round after 3 rounds, its History and ``restore``'s other
    arguments."""
    run = _cheap()
    directory = tmp_path_factory.mktemp("saved")
    history = simulate(**run, rounds=3, key=KEY, checkpoint_dir=directory)
    simulation = Simulation(run["compiled"], run["population"], run["bindings"])
    init_key, run_key = jax.random.split(KEY)
    shapes = jax.eval_shape(simulation.init, init_key, simulation.init_args, simulation.inputs)
    shardings = state_shardings(shapes, simulation.groups, peer_mesh())
    expected = checkpoint.fingerprint(simulation, shapes, run_key)
    return directory, history, (expected, shapes, shardings)


def test_an_evaluation_after_the_first_runs_last_round_stays_in_the_history(tmp_path):
    run = _cheap()

    def evaluate(states):
        return {"total": jnp.sum(states["self"]["state"]["v"])}

    whole = simulate(**run, rounds=4, key=KEY, evaluate=evaluate, eval_every=2)
    first = simulate(**run, rounds=3, key=KEY, evaluate=evaluate, eval_every=2,
                     checkpoint_dir=tmp_path)
    resumed = simulate(**run, rounds=4, key=KEY, evaluate=evaluate, eval_every=2,
                       resume=tmp_path)
    np.testing.assert_array_equal(np.flatnonzero(~np.isnan(whole["total"])), [1, 3])
    np.testing.assert_array_equal(np.flatnonzero(~np.isnan(resumed["total"])), [1, 2, 3])
    assert resumed["total"][2] == first["total"][2]
    resumed.metrics["total"][2] = np.nan
    _assert_same(resumed, whole)


def test_a_run_with_a_typed_key_resumes_and_refuses_another_key(tmp_path):
    run, key = _cheap(), jax.random.key(1)
    whole = simulate(**run, rounds=3, key=key)
    simulate(**run, rounds=2, key=key, checkpoint_dir=tmp_path)
    _assert_same(simulate(**run, rounds=3, key=key, resume=tmp_path), whole)
    with pytest.raises(CheckpointError, match="was written with another key"):
        simulate(**run, rounds=3, key=jax.random.key(2), resume=tmp_path)


def test_resuming_a_finished_run_returns_its_history(saved):
    again = simulate(**_cheap(), rounds=3, key=KEY, resume=saved[0])
    _assert_same(again, saved[1])


def _copy(saved, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(saved[0], directory)
    return directory


def _damage(path, how):
    if how == "missing":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    if how == "bit flip":
        data[len(data) // 2] ^= 0x04
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["bit flip", "truncated", "missing"])
def test_damage_to_any_file_is_refused_or_harmless(saved, tmp_path, how):
    directory, history, restore_args = saved
    refused = []
    for name in sorted(p.relative_to(directory) for p in directory.rglob("*") if p.is_file()):
        copy = tmp_path / str(name).replace("/", "_")
        shutil.copytree(directory, copy)
        _damage(copy / name, how)
        try:
            restored = checkpoint.restore(copy, *restore_args)
        except CheckpointError as error:
            assert str(error).startswith(f"checkpoint {copy.resolve()}/3 ")
            refused.append(str(name))
            continue
        # a file the restore does not read (orbax's bookkeeping): the same checkpoint
        assert restored.round == 3
        for a, b in zip(jax.tree.leaves(restored.states), jax.tree.leaves(history.states),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for metric in history.metrics:
            np.testing.assert_array_equal(restored.metrics[metric], history[metric])
    assert "3/meta/metadata" in refused and any(n.startswith("3/arrays/d/") for n in refused)


@pytest.mark.parametrize("part, how, message", [
    ("3/meta/metadata", "bit flip", r"is (unreadable or corrupted \(meta\)|corrupted: its meta)"),
    ("3/arrays/d", "bit flip", r"is unreadable or corrupted \(arrays\): .*DATA_LOSS"),
    ("3/arrays/d", "truncated", r"is unreadable or corrupted \(arrays\)"),
    ("3/arrays/_METADATA", "missing", r"is unreadable or corrupted \(arrays\): "
                                      r"FileNotFoundError"),
    ("3/meta/metadata", "missing", r"is unreadable or corrupted \(meta\): FileNotFoundError"),
])
def test_simulate_refuses_a_damaged_checkpoint(saved, tmp_path, part, how, message):
    directory = _copy(saved, tmp_path)
    target = directory / part
    if target.is_dir():  # the arrays' data file
        target = max(target.iterdir(), key=lambda p: p.stat().st_size)
    _damage(target, how)
    with pytest.raises(CheckpointError, match=message):
        simulate(**_cheap(), rounds=5, key=KEY, resume=directory)


def test_content_that_does_not_match_its_digests_is_refused(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    meta_file = directory / "3" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["diverged_at"] = 1  # valid JSON, another value
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupted: its meta does not match the digest"):
        checkpoint.restore(directory, *saved[2])
    # a well-formed checkpoint of other states, given the original's meta
    restored = checkpoint.restore(saved[0], *saved[2])
    other = tmp_path / "other"
    checkpoint.save(other, 3, jax.tree.map(lambda a: a + 1, restored.states), restored.metrics,
                    run=saved[2][0], config=restored.config, diverged_at=None)
    shutil.copy(saved[0] / "3" / "meta" / "metadata", other / "3" / "meta" / "metadata")
    with pytest.raises(CheckpointError, match="corrupted: its arrays do not match the digest"):
        checkpoint.restore(other, *saved[2])


def test_a_missing_or_empty_directory_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint directory {tmp_path}/nope"):
        simulate(**_cheap(), rounds=5, key=KEY, resume=tmp_path / "nope")
    with pytest.raises(CheckpointError, match=f"{tmp_path} holds no checkpoint"):
        simulate(**_cheap(), rounds=5, key=KEY, resume=tmp_path)


@pytest.mark.parametrize("run, key, message", [
    (lambda: _cheap(peers=Peers(4, init_args={"state": (np.ones((4, 1), np.float32),)})),
     KEY, r"of another population: 'self' has count 3 in the checkpoint, 4 in this run"),
    (lambda: _cheap(peers=Peers(3, init_args={"state": (np.ones((3, 1), np.float32),)},
                                cohort=2)),
     KEY, r"of another population: 'self' has cohort None in the checkpoint, 2 in this run"),
    (lambda: _cheap(holder=WIDE), KEY,
     r"holds other states: \['self'\]\['state'\]\['v'\] is float32\[3, 1\] in the checkpoint, "
     r"float32\[3, 2\] in this run"),
    (lambda: _cheap(HalvePlusTwo), KEY, "was written by another round program"),
    (_cheap, jax.random.PRNGKey(5), "was written with another key"),
])
def test_a_checkpoint_of_another_run_is_refused(saved, run, key, message):
    with pytest.raises(CheckpointError, match=message):
        simulate(**run(), rounds=5, key=key, resume=saved[0])


def test_checkpoint_arguments_are_checked(saved, tmp_path):
    run = _cheap()
    with pytest.raises(CheckpointError, match=r"is after round 3, past rounds=2"):
        simulate(**run, rounds=2, key=KEY, resume=saved[0])
    with pytest.raises(CheckpointError, match=r"already holds checkpoints \(after rounds "
                                              r"\[3\]\); resume from it"):
        simulate(**run, rounds=5, key=KEY, checkpoint_dir=saved[0])
    with pytest.raises(SimulationError, match="checkpoint_every needs a checkpoint_dir"):
        simulate(**run, rounds=5, key=KEY, checkpoint_every=2)
    with pytest.raises(SimulationError, match="checkpoint_every must be an integer >= 1"):
        simulate(**run, rounds=5, key=KEY, checkpoint_every=0, checkpoint_dir=tmp_path)
    with pytest.raises(SimulationError, match="resume or initial_states, not both"):
        simulate(**run, rounds=5, key=KEY, resume=saved[0], initial_states=saved[1].states)


# -- the command --------------------------------------------------------------------------

CLI = ["simulate", "--set", "num_clients=4", "--set", "clients_per_round=2", "--set",
       "max_client_size=20", "--set", "local_steps=1", "--no-progress"]


def _rows(out):
    return json.loads((out / "metrics.json").read_text())["rounds"]


def test_bbjax_simulate_checkpoints_and_resumes_exactly(tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    assert main(CLI + ["--rounds", "5", "--out", str(tmp_path / "whole")]) == 0
    assert main(CLI + ["--rounds", "3", "--out", str(tmp_path / "first"),
                       "--checkpoint-dir", str(checkpoints), "--checkpoint-every", "2"]) == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["2", "3"]
    capsys.readouterr()
    assert main(["simulate", "--resume", str(checkpoints), "--rounds", "5", "--no-progress",
                 "--out", str(tmp_path / "resumed")]) == 0
    assert f"--resume {checkpoints} (after round 3)" in capsys.readouterr().out
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "whole")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["3", "5"]


@pytest.mark.parametrize("argv, message", [
    (["--resume", "nowhere"], "CheckpointError: no checkpoint directory "),
    (["fedavg-synthetic", "--resume", "."], "ConfigError: --resume takes the configuration "
                                            "from the checkpoint"),
    (["--checkpoint-every", "2"], "ConfigError: --checkpoint-every must be an integer >= 1 "
                                  "with --checkpoint-dir or --resume, got 2"),
])
def test_bbjax_simulate_checkpoint_errors_are_one_line(argv, message, capsys):
    assert main(["simulate", "--no-progress", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("bbjax: error: ") and message in error and error.count("\n") == 1
