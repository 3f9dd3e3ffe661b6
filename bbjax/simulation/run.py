"""``simulate``: run a compiled Module's rounds for a population of peers."""

from __future__ import annotations

import math
import numbers
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.compiler import Compiled
from bbjax.components import Component
from bbjax.simulation.engine import Simulation, States
from bbjax.errors import SimulationError
from bbjax.simulation.history import History
from bbjax.simulation.population import Peers
from bbjax.simulation.sharding import peer_mesh, replicated, state_shardings

Evaluate = Callable[[States], Mapping[str, jax.Array]]


def simulate(compiled: Compiled, population: Mapping[str, int | Peers], rounds: int,
             key: jax.Array, *, bindings: Mapping[str, Component],
             evaluate: Evaluate | None = None, eval_every: int = 1,
             rounds_per_call: int | None = None, progress: bool = False,
             devices: int | Sequence[jax.Device] | None = None,
             initial_states: States | None = None) -> History:
    """Run ``rounds`` rounds of ``compiled`` for ``population``; per-round metrics in a History.

    Rounds run as a ``lax.scan`` inside one jitted call, ``rounds_per_call`` rounds at a
    time (default: all of them, or ``eval_every`` when evaluating, or 1 with a progress
    bar); between calls the host updates the ``progress`` bar and calls ``evaluate(states)``
    (jitted; ``states[entry][slot]`` is stacked over the entry's peers; returns scalar
    metrics) after every ``eval_every``-th round and the last. Round ``r``'s randomness
    is ``fold_in(key, r)``, so results do not depend on ``rounds_per_call``. ``devices``
    (a count or a list; default all devices: every process's in a multi-process run)
    shards the peer axis of every entry whose count they divide. ``initial_states`` (e.g. a previous History's ``states``)
    replaces the fresh states of ``Simulation.init``. Metrics: the stages' scalar graph outputs (averaged over the
    peers that ran), ``bytes_sent`` (payload bytes of the round's delivered messages) and
    what ``evaluate`` returns (NaN in other rounds).
    """
    for name, value, low in (("rounds", rounds, 1), ("eval_every", eval_every, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise SimulationError(f"{name} must be an int >= {low}, got {value!r}")
    if rounds_per_call is None:
        rounds_per_call = eval_every if evaluate is not None else (1 if progress else rounds)
    elif isinstance(rounds_per_call, bool) or not isinstance(rounds_per_call, numbers.Integral) \
            or rounds_per_call < 1:
        raise SimulationError(f"rounds_per_call must be an int >= 1, got {rounds_per_call!r}")
    simulation = Simulation(compiled, population, bindings)
    mesh = peer_mesh(devices)
    started = time.perf_counter()
    init_key, run_key = jax.random.split(key)
    data = simulation.init_args, simulation.inputs  # jit arguments, not program constants
    shapes = jax.eval_shape(simulation.init, init_key, *data)
    shardings = state_shardings(shapes, simulation.groups, mesh)
    if initial_states is None:
        states = jax.jit(simulation.init, out_shardings=shardings)(init_key, *data)
    else:
        _check_states(initial_states, shapes)
        if mesh.is_multi_process:  # across processes device_put takes host or global arrays
            initial_states = jax.tree.map(
                lambda a: np.asarray(a) if isinstance(a, jax.Array) and a.is_fully_addressable
                else a, initial_states)
        states = jax.device_put(initial_states, shardings)
    run_rounds = jax.jit(_scan_rounds(simulation), static_argnums=3, donate_argnums=0,
                         out_shardings=(shardings, replicated(mesh)))
    evaluate_jit = jax.jit(evaluate) if evaluate is not None else None
    chunks: list[dict[str, np.ndarray]] = []
    evaluations: dict[int, Mapping[str, Any]] = {}
    bar = _progress_bar(rounds) if progress else None
    done = 0
    while done < rounds:
        count = min(rounds_per_call, rounds - done)
        states, metrics = run_rounds(states, run_key, jnp.int32(done), count, data[1])
        chunks.append(jax.device_get(metrics))
        done += count
        if evaluate_jit is not None and (done % eval_every == 0 or done == rounds):
            evaluations[done - 1] = jax.device_get(evaluate_jit(states))
        if bar is not None:
            bar.update(count)
            bar.set_postfix(_postfix(chunks[-1], evaluations.get(done - 1)), refresh=False)
    if bar is not None:
        bar.close()
    metrics = {name: np.concatenate([c[name] for c in chunks]).astype(np.float64)
               for name in chunks[0]}
    for name in sorted({m for e in evaluations.values() for m in e}):
        column = np.full(rounds, np.nan)
        for r, values in evaluations.items():
            column[r] = float(values[name])
        metrics[name] = column
    return History(metrics, states, time.perf_counter() - started)


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
    def run(states: States, key: jax.Array, first: jax.Array, count: int, inputs: Any):
        def one(states, r):
            return simulation.round(states, jax.random.fold_in(key, r), inputs)
        return jax.lax.scan(one, states, first + jnp.arange(count, dtype=jnp.int32))
    return run


def _progress_bar(rounds: int):
    from tqdm.auto import tqdm
    return tqdm(total=rounds, unit="round", dynamic_ncols=True)


def _postfix(metrics: Mapping[str, np.ndarray], evaluation: Mapping[str, Any] | None) -> dict:
    shown = {name: float(values[-1]) for name, values in metrics.items()
             if name != "bytes_sent" and np.ndim(values) == 1}
    shown.update({name: float(v) for name, v in (evaluation or {}).items()})
    return {k: f"{v:.4g}" for k, v in shown.items() if math.isfinite(v)}
