"""``simulate``: run a compiled Module's rounds for a population of peers."""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bbjax._checks import check_count
from bbjax.compiler import Compiled
from bbjax.components import Component
from bbjax.errors import CheckpointError, DivergenceError, SimulationError
from bbjax.simulation import cache, checkpoint
from bbjax.simulation.cache import Clock
from bbjax.simulation.engine import Simulation, States
from bbjax.simulation.history import History
from bbjax.simulation.population import Peers
from bbjax.simulation.sharding import peer_mesh, replicated, state_shardings

Evaluate = Callable[[States], Mapping[str, jax.Array]]


def simulate(compiled: Compiled, population: Mapping[str, int | Peers], rounds: int,
             key: jax.Array, *, bindings: Mapping[str, Component] | None = None,
             evaluate: Evaluate | None = None, eval_every: int = 1,
             rounds_per_call: int | None = None, progress: bool = False,
             devices: int | Sequence[jax.Device] | None = None,
             initial_states: States | None = None, allow_divergence: bool = False,
             may_diverge: Collection[str] = (), config: Mapping[str, Any] | None = None,
             checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None,
             resume: str | Path | None = None) -> History:
    """Run ``rounds`` rounds of ``compiled`` for ``population``; per-round metrics in a History.

    ``bindings`` (slot -> component) default to the components ``compiled`` was compiled
    with; an artifact loaded from disk carries none and needs them.

    Rounds run as a ``lax.scan`` inside one jitted call, ``rounds_per_call`` rounds at a
    time (default: all of them, or 1 with a progress bar); a call also ends after every
    ``eval_every``-th round when evaluating. Between calls the host updates the
    ``progress`` bar and calls ``evaluate(states)`` (jitted; ``states[entry][slot]`` is
    stacked over the entry's peers; returns scalar metrics) after every ``eval_every``-th
    round and the last. Round ``r``'s randomness is ``fold_in(key, r)``, so results do not
    depend on ``rounds_per_call``. ``devices`` (a count or a list; default all devices:
    every process's in a multi-process run) shards the peer axis of every entry whose count
    they divide. ``initial_states`` (e.g. a previous History's ``states``) replaces the
    fresh states of ``Simulation.init``. Metrics: the stages' scalar graph outputs
    (averaged over the peers that ran), ``bytes_sent`` (payload bytes of the round's
    delivered messages) and what ``evaluate`` returns (NaN in other rounds). ``config``
    (JSON-ready) becomes the History's ``config``.

    After each call the host checks its metrics, the evaluation and a flag, computed inside
    the call, saying whether the states the rounds update are finite. At the first
    non-finite one it raises :class:`DivergenceError` carrying that round and the History of
    the rounds run so far; with ``allow_divergence`` it records the round in
    ``History.diverged_at`` and goes on. ``may_diverge`` names population entries whose
    states may become non-finite without the run diverging (e.g. clients that a robust
    server rejects and counts in its ``rejected`` metric); metrics and every other entry's
    states are still checked.

    With ``checkpoint_dir`` (a directory without checkpoints, or the one resumed) the host
    writes a checkpoint there after every ``checkpoint_every``-th round (a call ends there)
    and after the last (see :mod:`bbjax.simulation.checkpoint`). ``resume`` (such a
    directory) continues from its latest checkpoint, after ``k`` rounds say: the states,
    the metrics of those rounds and the round counter are restored, rounds ``k .. rounds -
    1`` run, and the History is that of an uninterrupted run of ``rounds`` rounds, bit for
    bit. ``key`` and everything that shapes the round program must be the run's that wrote
    the checkpoint; :class:`CheckpointError` names what is not, or what is missing or
    corrupted. ``config`` defaults to the checkpoint's.
    """
    clock, started = Clock(), time.perf_counter()
    for name, value in (("rounds", rounds), ("eval_every", eval_every)):
        check_count(name, value, error=SimulationError)
    if rounds_per_call is None:
        rounds_per_call = 1 if progress else rounds
    check_count("rounds_per_call", rounds_per_call, error=SimulationError)
    periods = [rounds_per_call] + ([eval_every] if evaluate is not None else [])
    if checkpoint_every is not None:
        check_count("checkpoint_every", checkpoint_every, error=SimulationError)
        if checkpoint_dir is None:
            raise SimulationError("checkpoint_every needs a checkpoint_dir to write to")
        periods.append(checkpoint_every)
    if resume is not None and initial_states is not None:
        raise SimulationError("give resume or initial_states, not both")
    mesh = peer_mesh(devices)
    entry = cache.built(compiled, population, bindings,
                        tuple((d.process_index, d.id) for d in mesh.devices.flat), clock)
    simulation = entry.simulation.with_population(population)
    if isinstance(may_diverge, str) or not set(may_diverge) <= set(population):
        raise SimulationError(f"may_diverge must be a collection of population entries "
                              f"{sorted(population)}, got {may_diverge!r}")
    covered = simulation.scheduled_rounds
    if covered is not None and rounds > covered:
        raise SimulationError(f"the cohort schedules cover {covered} rounds; the run has "
                              f"rounds={rounds}")
    if mesh.is_multi_process and (checkpoint_dir is not None or resume is not None):
        raise SimulationError("checkpoints are written and resumed by single-process runs "
                              "only")
    if checkpoint_dir is not None:
        checkpoint_dir = checkpoint.check_writable(checkpoint_dir, resume)
    init_key, run_key = jax.random.split(key)
    data = simulation.init_args, simulation.inputs, simulation.tables  # arguments, not constants
    key_type = (jax.typeof(init_key).str_short(),)
    shapes = entry.program(("shapes", *key_type),
                           lambda: jax.eval_shape(simulation.init, init_key, *data), clock)
    shardings = state_shardings(shapes, simulation.groups, mesh)
    fingerprint = None
    if checkpoint_dir is not None or resume is not None:
        fingerprint = clock.timed("compile", checkpoint.fingerprint, simulation, shapes, run_key)
    parts: list[dict[str, np.ndarray]] = []
    diverged_at = None
    done = 0

    def history() -> History:
        return History(_join(parts), states, time.perf_counter() - started, dict(config or {}),
                       diverged_at, clock.compile, clock.run)

    if resume is not None:
        restored = checkpoint.restore(resume, fingerprint, shapes, shardings)
        if restored.round > rounds:
            raise CheckpointError(f"the checkpoint in {resume} is after round "
                                  f"{restored.round}, past rounds={rounds}")
        states, done, diverged_at = restored.states, restored.round, restored.diverged_at
        parts.append(restored.metrics)
        config = restored.config if config is None else config
    elif initial_states is None:
        init = entry.program(("init", *key_type), lambda: jax.jit(
            simulation.init, out_shardings=shardings).lower(init_key, *data).compile(), clock)
        states = clock.timed("run", lambda: jax.block_until_ready(init(init_key, *data)))
    else:
        _check_states(initial_states, shapes)
        if mesh.is_multi_process:  # across processes device_put takes host or global arrays
            initial_states = jax.tree.map(
                lambda a: np.asarray(a) if isinstance(a, jax.Array) and a.is_fully_addressable
                else a, initial_states)
        states = jax.device_put(initial_states, shardings)
    bar = _progress_bar(rounds, done) if progress else None
    try:
        while done < rounds:
            count = min(rounds, *((done // p + 1) * p for p in periods)) - done
            run_rounds = entry.program(("rounds", count, *key_type), lambda: jax.jit(
                functools.partial(_scan_rounds(simulation), count=count), donate_argnums=0,
                out_shardings=(shardings, replicated(mesh), replicated(mesh))).lower(
                    states, run_key, jnp.int32(done), *data[1:]).compile(), clock)
            states, metrics, finite = clock.timed("run", _fetched, run_rounds, states,
                                                  run_key, jnp.int32(done), *data[1:])
            part = {name: np.asarray(values, np.float64) for name, values in metrics.items()}
            evaluation = {}
            if evaluate is not None and ((done + count) % eval_every == 0
                                         or done + count == rounds):
                evaluate_program = entry.program(
                    ("evaluate", *cache.identity(evaluate)),
                    lambda: jax.jit(evaluate).lower(states).compile(), clock)
                evaluation = clock.timed("run", lambda: {
                    name: float(v) for name, v in
                    jax.device_get(evaluate_program(states)).items()})
                for name, value in evaluation.items():
                    part[name] = np.full(count, np.nan)
                    part[name][-1] = value
            parts.append(part)
            found = _divergence(metrics, evaluation,
                                {name: ok for name, ok in finite.items()
                                 if name.split(".", 1)[0] not in may_diverge}, done, count)
            done += count
            if bar is not None:
                bar.update(count)
                bar.set_postfix(_postfix(part), refresh=False)
            if found is not None and diverged_at is None:
                diverged_at = found[0]
                if not allow_divergence:
                    raise DivergenceError(
                        f"the run diverged at round {found[0]} (counting from 0): {found[1]}; "
                        f"{done} of {rounds} rounds ran; allow_divergence=True (bbjax "
                        f"simulate --allow-divergence) keeps going", round=found[0],
                        history=history())
            if checkpoint_dir is not None and (done == rounds or checkpoint_every is not None
                                               and done % checkpoint_every == 0):
                checkpoint.save(checkpoint_dir, done, states, _join(parts), run=fingerprint,
                                config=dict(config or {}), diverged_at=diverged_at)
    finally:
        if bar is not None:
            bar.close()
    return history()


def _fetched(run_rounds: Any, states: States, *args: Any) -> tuple:
    """``run_rounds(states, *args)`` with its metrics and finiteness flags on the host."""
    states, metrics, finite = run_rounds(states, *args)
    return (states, *jax.device_get((metrics, finite)))


def _check_states(given: States, expected: States) -> None:
    """Raise :class:`SimulationError` unless ``given`` has ``expected``'s structure, shapes
    and dtypes."""
    given_leaves, given_tree = jax.tree.flatten(given)
    expected_leaves, expected_tree = jax.tree.flatten(expected)
    if given_tree != expected_tree:
        raise SimulationError(f"initial_states has structure {given_tree}; the population's "
                              f"states have {expected_tree}")
    for path_leaf, a, b in zip(jax.tree_util.tree_flatten_with_path(expected)[0], given_leaves,
                               expected_leaves):
        if np.shape(a) != b.shape or jnp.result_type(a) != b.dtype:
            raise SimulationError(
                f"initial_states{jax.tree_util.keystr(path_leaf[0])} is "
                f"{jnp.result_type(a)}{list(np.shape(a))}, expected {b.dtype}{list(b.shape)}")


def _scan_rounds(simulation: Simulation):
    """``(states, key, first, inputs, tables, *, count) -> (states, metrics, finite)``:
    rounds ``first .. first + count - 1``, their metrics stacked, and for each
    ``entry.slot`` whether the floating leaves the round updates are all finite after the
    last round."""
    def run(states: States, key: jax.Array, first: jax.Array, inputs: Any, tables: Any, *,
            count: int):
        updated: list[bool] = []  # per leaf, whether the round replaces it (seen at trace time)

        def one(states, r):
            new, metrics = simulation.round(states, jax.random.fold_in(key, r), inputs, r,
                                            tables)
            if not updated:
                updated.extend(a is not b for a, b in
                               zip(jax.tree.leaves(new), jax.tree.leaves(states)))
            return new, metrics

        states, metrics = jax.lax.scan(one, states, first + jnp.arange(count, dtype=jnp.int32))
        finite: dict[str, jax.Array] = {}
        for (path, leaf), replaced in zip(jax.tree_util.tree_flatten_with_path(states)[0],
                                          updated):
            if replaced and jnp.issubdtype(leaf.dtype, jnp.inexact):
                name = f"{path[0].key}.{path[1].key}"
                finite[name] = finite.get(name, True) & jnp.all(jnp.isfinite(leaf))
        return states, metrics, finite
    return run


def _divergence(metrics: Mapping[str, np.ndarray], evaluation: Mapping[str, float],
                finite: Mapping[str, Any], first: int, count: int) -> tuple[int, str] | None:
    """The first round of the call running rounds ``first .. first + count - 1`` with a
    non-finite metric, evaluation or state, and what was non-finite; None if none was."""
    found = []
    for name, values in metrics.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            found.append((first + int(bad[0]), f"{name} is {float(values[bad[0]])}"))
    last = first + count - 1
    found += [(last, f"{name} is {value}") for name, value in evaluation.items()
              if not math.isfinite(value)]
    stale = sorted(name for name, ok in finite.items() if not ok)
    if stale:
        names = ", ".join(stale)
        found.append((last, f"the states of {names} are non-finite after round {last}"))
    return min(found) if found else None


def _join(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The calls' metrics end to end; NaN in the calls where a metric is missing."""
    names = list(dict.fromkeys(name for part in parts for name in part))
    lengths = [len(next(iter(part.values()))) for part in parts]
    return {name: np.concatenate([part.get(name, np.full(n, np.nan))
                                  for part, n in zip(parts, lengths)]) for name in names}


def _progress_bar(rounds: int, done: int):
    from tqdm.auto import tqdm
    return tqdm(total=rounds, initial=done, unit="round", dynamic_ncols=True)


def _postfix(part: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The last call's finite last values, but ``bytes_sent``."""
    return {name: f"{float(values[-1]):.4g}" for name, values in part.items()
            if name != "bytes_sent" and np.ndim(values) == 1 and math.isfinite(values[-1])}
