"""Simulation checkpoints (orbax-checkpoint, written synchronously).

A checkpoint directory holds one orbax step per checkpoint, named by the number of rounds
done (the last two are kept). Each step has two items:

* ``arrays``: every peer's slot states and the metrics so far (``[metric, round]``);
* ``meta`` (JSON): the round counter, the metric names, the run's ``config`` and
  ``diverged_at``, the run's fingerprint (population, state shapes and dtypes, a hash of
  the lowered round program and of ``Peers.inputs``, the run key) and two SHA-256 digests,
  of the arrays' bytes and of the meta itself.

:func:`restore` refuses, with :class:`CheckpointError` naming what is wrong, a checkpoint
that is missing, unreadable or corrupted (a digest does not match) and one whose
fingerprint differs from the resuming run's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import CheckpointError
from bbjax.simulation.engine import Simulation, States

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

FORMAT = 1
KEEP = 2  # checkpoints kept per directory: the latest and the one before
ITEMS = ("arrays", "meta")


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` read: ``round`` rounds done, the states after them, the
    metrics of those rounds, the run's ``config`` and ``diverged_at``."""

    round: int
    states: States
    metrics: dict[str, np.ndarray]
    config: dict
    diverged_at: int | None


def fingerprint(simulation: Simulation, shapes: States, run_key: jax.Array) -> dict:
    """What a checkpoint must share with the run resuming it: the population, the states'
    shapes and dtypes, hashes of the lowered round and of ``Peers.inputs``, and the run
    key. Lowering the round traces it once more (no compilation)."""
    population = {name: p.describe() for name, p in sorted(simulation.groups.items())}
    states = {jax.tree_util.keystr(path): _spec(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    plain = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), shapes)
    program = jax.jit(simulation.round).lower(plain, run_key, simulation.inputs, 0,
                                              simulation.tables).as_text()
    inputs = hashlib.sha256()
    arrays = (simulation.inputs, simulation.tables)
    for path, leaf in jax.tree_util.tree_flatten_with_path(arrays)[0]:
        _absorb(inputs, jax.tree_util.keystr(path), np.asarray(leaf))
    key = _key_data(run_key)
    return {"population": population, "states": states,
            "program": hashlib.sha256(program.encode()).hexdigest(),
            "inputs": inputs.hexdigest(),
            "key": {"dtype": str(run_key.dtype), "data": key.ravel().tolist()}}


def check_writable(directory: str | Path, resumed_from: str | Path | None) -> Path:
    """``directory`` as an absolute path, unless it already holds checkpoints of another
    run (any, unless it is the directory being resumed)."""
    path = Path(directory).resolve()
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"checkpoint_dir {path} is a file, not a directory")
    if resumed_from is not None and Path(resumed_from).resolve() == path:
        return path
    steps = _steps(path) if path.is_dir() else []
    if steps:
        raise CheckpointError(f"checkpoint_dir {path} already holds checkpoints (after rounds "
                              f"{steps}); resume from it or choose another directory")
    return path


def save(directory: Path, round: int, states: States, metrics: Mapping[str, np.ndarray], *,
         run: Mapping[str, Any], config: Mapping[str, Any], diverged_at: int | None) -> None:
    """Write the checkpoint after ``round`` rounds to ``directory`` and wait for it:
    ``states``, ``metrics`` (one value per round so far), the run's :func:`fingerprint`
    ``run``, ``config`` and ``diverged_at``."""
    arrays = {"states": jax.device_get(states),
              "metrics": np.stack([np.asarray(v, np.float64) for v in metrics.values()])}
    meta = {"format": FORMAT, "round": round, "metric_names": list(metrics),
            "config": dict(config), "diverged_at": diverged_at, **run,
            "arrays_digest": _digest(arrays)}
    meta["digest"] = _meta_digest(meta)
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(max_to_keep=KEEP, enable_async_checkpointing=False)
    try:
        with ocp.CheckpointManager(directory, options=options, item_names=ITEMS) as manager:
            manager.save(round, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                        meta=ocp.args.JsonSave(meta)))
            manager.wait_until_finished()
    except Exception as exc:  # a full disk, a permission, ...
        raise CheckpointError(f"could not write the checkpoint after round {round} to "
                              f"{directory}: {_one_line(exc)}") from exc


def read_meta(directory: str | Path) -> dict:
    """The ``meta`` item of the latest checkpoint in ``directory``, its digest checked."""
    return _read_meta(*_latest(directory))


def restore(directory: str | Path, expected: Mapping[str, Any], shapes: States,
            shardings: Any) -> Restored:
    """The latest checkpoint in ``directory``, its states placed with ``shardings``, after
    checking it against the resuming run's ``expected`` fingerprint and its digests."""
    path, step = _latest(directory)
    meta = _read_meta(path, step)
    _compare(path / str(step), meta, expected)
    target = {"states": jax.tree.map(
                  lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                  shapes, shardings),
              "metrics": jax.ShapeDtypeStruct((len(meta["metric_names"]), step), np.float64)}
    arrays = _read(path, step, _orbax().args.StandardRestore(target), "arrays")
    if _digest(jax.device_get(arrays)) != meta["arrays_digest"]:
        raise CheckpointError(f"checkpoint {path / str(step)} is corrupted: its arrays do not "
                              f"match the digest written with them")
    metrics = {name: np.asarray(row) for name, row in
               zip(meta["metric_names"], np.asarray(arrays["metrics"]))}
    return Restored(step, arrays["states"], metrics, meta["config"], meta["diverged_at"])


def _read_meta(path: Path, step: int) -> dict:
    meta = _read(path, step, _orbax().args.JsonRestore(), "meta")
    if not isinstance(meta, dict) or meta.get("digest") != _meta_digest(meta):
        raise CheckpointError(f"checkpoint {path / str(step)} is corrupted: its meta does not "
                              f"match the digest written with it")
    if meta["format"] != FORMAT or meta["round"] != step:
        raise CheckpointError(f"checkpoint {path / str(step)} has format {meta['format']} "
                              f"(this bbjax reads {FORMAT}) and round {meta['round']}")
    return meta


def _compare(where: Path, meta: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` naming the first difference between the checkpoint's
    fingerprint and the resuming run's."""
    saved, now = meta["population"], expected["population"]
    for name in sorted(set(saved) | set(now)):
        if name not in saved or name not in now:
            raise CheckpointError(
                f"checkpoint {where} is of another population: entry {name!r} is "
                f"{'not in the checkpoint' if name not in saved else 'not in this run'}")
        for field, value in now[name].items():
            if saved[name].get(field) != value:
                raise CheckpointError(
                    f"checkpoint {where} is of another population: {name!r} has {field} "
                    f"{saved[name].get(field)!r} in the checkpoint, {value!r} in this run")
    saved, now = meta["states"], expected["states"]
    for leaf in sorted(set(saved) | set(now)):
        if saved.get(leaf) != now.get(leaf):
            raise CheckpointError(
                f"checkpoint {where} holds other states: {leaf} is "
                f"{saved.get(leaf, 'absent')} in the checkpoint, {now.get(leaf, 'absent')} in "
                f"this run")
    if meta["program"] != expected["program"]:
        raise CheckpointError(
            f"checkpoint {where} was written by another round program (another Module, "
            f"components or settings such as a learning rate, or another jax version)")
    if meta["inputs"] != expected["inputs"]:
        raise CheckpointError(f"checkpoint {where} was written with other Peers.inputs values, "
                              f"cohort schedules or neighbours")
    if meta["key"] != expected["key"]:
        raise CheckpointError(f"checkpoint {where} was written with another key; resume with "
                              f"the key of the run that wrote it")


def _steps(path: Path) -> list[int]:
    with _manager(path) as manager:
        return list(manager.all_steps())


def _latest(directory: str | Path) -> tuple[Path, int]:
    path = Path(directory).resolve()
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint directory {path}")
    steps = _steps(path)
    if not steps:
        raise CheckpointError(f"{path} holds no checkpoint")
    return path, max(steps)


def _orbax():
    import orbax.checkpoint  # on first use: importing it takes a few seconds
    return orbax.checkpoint


def _manager(path: Path) -> ocp.CheckpointManager:
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
    return ocp.CheckpointManager(path, options=options, item_names=ITEMS)


def _read(path: Path, step: int, args: Any, item: str) -> Any:
    """Item ``item`` of step ``step``; a missing, truncated or damaged file raises
    :class:`CheckpointError`."""
    try:
        with _manager(path) as manager:
            return manager.restore(step, args=_orbax().args.Composite(**{item: args}))[item]
    except Exception as exc:  # orbax and tensorstore raise many types for damaged files
        raise CheckpointError(f"checkpoint {path / str(step)} is unreadable or corrupted "
                              f"({item}): {_one_line(exc)}") from exc


def _one_line(exc: Exception) -> str:
    """``exc``'s type and message on one line, at most 300 characters."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _spec(leaf: Any) -> str:
    return f"{leaf.dtype}{list(leaf.shape)}"


def _key_data(key: jax.Array) -> np.ndarray:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key)


def _absorb(hasher: Any, name: str, value: np.ndarray) -> None:
    hasher.update(f"{name}:{value.dtype}{list(value.shape)}:".encode())
    hasher.update(np.ascontiguousarray(value).tobytes())


def _digest(tree: Any) -> str:
    """SHA-256 of every leaf's path, dtype, shape and bytes."""
    hasher = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        _absorb(hasher, jax.tree_util.keystr(path), _key_data(leaf))
    return hasher.hexdigest()


def _meta_digest(meta: Mapping[str, Any]) -> str:
    rest = {k: v for k, v in meta.items() if k != "digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()
