"""``run``: population-based training of a whole population as one vmapped program.

The user writes three JAX functions of ONE member: ``init(key, hparams) -> state``,
``train_step(state, hparams, key) -> state`` and ``evaluate(state, hparams, key) ->
fitness`` (a scalar, higher is better, or a dict holding ``"fitness"`` and other scalar
metrics). ``hparams`` is the member's decoded hyperparameters
(:func:`~bbjax.strategies.pbt.space.decode`): traced scalars, so one compiled program
serves every member and every generation. bbjax vmaps them over the population, runs
``steps_per_generation`` training steps (a ``lax.scan``) and the evaluation of every member
in one jitted call, then exploit and explore (:func:`~bbjax.strategies.pbt.evolve.evolve`)
in another; each is compiled once per :func:`run`.

Keys: ``init_key, space_key, run_key = split(key, 3)``; the hyperparameters are
``sample(space_key, space, n)``, member ``j`` starts from ``init(split(init_key, n)[j],
...)``. Generation ``g`` uses ``step_key, evolve_key = split(fold_in(run_key, g))``,
``train_key, eval_key = split(step_key)``; member ``j`` trains with step ``s``'s key
``split(split(train_key, n)[j], steps_per_generation)[s]`` and is evaluated with
``split(eval_key, n)[j]``. The last generation is not evolved, so the final states are the
evaluated ones. The record's ``compile_seconds`` is the time before the first generation
(initial states, checks, compilation), ``run_seconds`` the generations'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import DivergenceError, InvalidArgument
from bbjax.strategies.config import (
    Binary,
    Perturbation,
    RayTune,
    Resample,
    SearchSpace,
    Truncation,
)
from bbjax.strategies.pbt.evolve import evolve
from bbjax.strategies.pbt.exploitation import cutoff, guard
from bbjax.strategies.pbt.history import GenerationRecord, PbtHistory
from bbjax.strategies.pbt.space import Hyperparameters, decode, sample

DEFAULT_EXPLOIT = Truncation(0.2)
DEFAULT_EXPLORE = Perturbation(0.2)
"""The issue's example: the worst fifth copies the best fifth, then perturbs by ±20 %."""

Init = Callable[[jax.Array, Hyperparameters], Any]
TrainStep = Callable[[Any, Hyperparameters, jax.Array], Any]
Evaluate = Callable[[Any, Hyperparameters, jax.Array], Any]


def run(init: Init, train_step: TrainStep, evaluate: Evaluate, space: SearchSpace,
        key: jax.Array, *, population_size: int, generations: int,
        exploit: Truncation | Binary = DEFAULT_EXPLOIT,
        explore: Perturbation | Resample | RayTune = DEFAULT_EXPLORE,
        steps_per_generation: int = 1, progress: bool = False,
        allow_divergence: bool = False, config: dict | None = None) -> PbtHistory:
    """Train a population of ``population_size`` for ``generations`` generations of
    ``steps_per_generation`` steps, evolving it between generations by ``exploit`` and
    ``explore`` (default: the issue's Truncation 0.2, Perturbation 0.2); the record's
    ``config`` is ``config``. Raises :class:`InvalidArgument` for bad counts, a
    ``space`` that is no :class:`SearchSpace`, a
    ``train_step`` whose state does not keep ``init``'s structure, shapes and dtypes, or an
    ``evaluate`` that gives no scalar fitness; :class:`DivergenceError` (``round`` the
    generation, ``history`` the generations so far) when every member of a generation
    failed, unless ``allow_divergence``."""
    n = population_size
    for name, value in (("population_size", n), ("generations", generations),
                        ("steps_per_generation", steps_per_generation)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(space, SearchSpace):
        raise InvalidArgument(f"space must be a SearchSpace, got {type(space).__name__}")
    cutoff(exploit, n)
    started = time.perf_counter()
    init_key, space_key, run_key = jax.random.split(key, 3)
    hparams = sample(space_key, space, n)
    members = jax.jit(jax.vmap(init))(jax.random.split(init_key, n), decode(space, hparams))
    _check_step(train_step, members, decode(space, hparams), run_key)

    def one_member(state, values, member_key):
        keys = jax.random.split(member_key, steps_per_generation)
        return jax.lax.scan(lambda s, k: (train_step(s, values, k), None), state, keys)[0]

    def keys(g):
        return jax.random.split(jax.random.fold_in(run_key, g))

    def train_and_evaluate(members, hparams, g):
        values = decode(space, hparams)
        train_key, eval_key = jax.random.split(keys(g)[0])
        members = jax.vmap(one_member)(members, values, jax.random.split(train_key, n))
        fitness, extras = _scores(jax.vmap(evaluate)(members, values,
                                                     jax.random.split(eval_key, n)), n)
        return members, guard(fitness, members), extras, values

    def evolve_step(members, hparams, fitness, g):
        members, hparams, lineage = evolve(keys(g)[1], fitness, members, hparams, space,
                                           exploit=exploit, explore=explore)
        return members, hparams, lineage.parent

    g0 = jnp.zeros((), jnp.int32)
    step = jax.jit(train_and_evaluate).lower(members, hparams, g0).compile()
    fitness_shape = jax.ShapeDtypeStruct((n,), jnp.float32)
    evolver = jax.jit(evolve_step).lower(members, hparams, fitness_shape, g0).compile()
    compile_seconds = time.perf_counter() - started  # initial states, checks, compiles
    return run_generations(step, evolver, members, hparams, space=space,
                           generations=generations, started=started,
                           compile_seconds=compile_seconds, config=config,
                           progress=progress, allow_divergence=allow_divergence)


def run_generations(train: Callable, evolve: Callable, members: Any,
                    hparams: Hyperparameters, *, space: SearchSpace, generations: int,
                    started: float, compile_seconds: float, config: dict | None,
                    progress: bool, allow_divergence: bool) -> PbtHistory:
    """The host loop of a PBT run over compiled steps: ``train(members, hparams, g) ->
    (trained, fitness, extras, values)`` and ``evolve(trained, hparams, fitness, g) ->
    (members, hparams, parent)`` (which must not consume ``trained``), ``generations``
    times, the last generation not evolved; the evolution is dispatched before the host
    waits for the fitness. Raises :class:`DivergenceError` (with the record so far) after
    a generation in which every member failed, unless ``allow_divergence``."""
    record = GenerationRecord(space, len(next(iter(hparams.values()))))
    bar = progress_bar(generations) if progress else None
    for g in range(generations):
        trained, fitness, extras, values = train(members, hparams, jnp.int32(g))
        if g + 1 < generations:
            members, hparams, parent = evolve(trained, hparams, fitness, jnp.int32(g))
        record.add(*jax.device_get((fitness, extras, values)))
        if not np.isfinite(record.fitness[-1]).any() and not allow_divergence:
            history = record.history(trained, started, compile_seconds, config)
            raise DivergenceError(f"every member of generation {g} (counting from 0) failed: "
                                  f"non-finite fitness or state", round=g, history=history)
        if g + 1 < generations:
            record.parents.append(np.asarray(parent))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best=f"{record.fitness[-1].max():.4g}")
    if bar is not None:
        bar.close()
    return record.history(trained, started, compile_seconds, config)


def _check_step(train_step: TrainStep, members: Any, values: Hyperparameters,
                key: jax.Array) -> None:
    """:class:`InvalidArgument` unless one training step (with a key like ``key``) keeps a
    member's state's structure, shapes and dtypes."""
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), members)
    hp = {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for k, v in values.items()}
    out = jax.eval_shape(train_step, one, hp, key)
    same = jax.tree.structure(out) == jax.tree.structure(one) and all(
        a.shape == b.shape and a.dtype == b.dtype
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(one)))
    if not same:
        raise InvalidArgument(f"train_step must return a state of init's structure, shapes "
                              f"and dtypes: got {_shapes(out)} for {_shapes(one)}")


def _shapes(tree: Any) -> str:
    text = str(jax.tree.map(lambda x: f"{x.dtype}{list(x.shape)}", tree))
    return text if len(text) <= 300 else text[:297] + "..."


def _scores(out: Any, n: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(fitness [n], extras {name: [n]})`` of ``evaluate``'s vmapped output."""
    if isinstance(out, dict):
        if "fitness" not in out:
            raise InvalidArgument(f"evaluate returned a dict without 'fitness': "
                                  f"{sorted(out)}")
        extras = {k: v for k, v in out.items() if k != "fitness"}
        out = out["fitness"]
    else:
        extras = {}
    for name, value in {"fitness": out, **extras}.items():
        if jnp.shape(value) != (n,):
            raise InvalidArgument(f"evaluate's {name!r} must be one scalar a member, got "
                                  f"shape {jnp.shape(value)[1:]}")
    return jnp.asarray(out, jnp.float32), {k: jnp.asarray(v, jnp.float32)
                                           for k, v in extras.items()}


def progress_bar(generations: int) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=generations, unit="generation", dynamic_ncols=True)
