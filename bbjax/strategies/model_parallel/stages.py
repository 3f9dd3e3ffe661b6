"""A model cut into pipeline stages: one pure ``apply(params, x) -> y`` and one parameter
pytree per stage, applied in order.

:func:`split` cuts a flax nnx model whose forward pass is a sequence of named sub-modules
(attribute paths such as ``"conv1"`` or ``"layers.0"``), with plain parameter-free
callables (a reshape, an activation) allowed between them: stage ``s`` applies its items
in the listed order and the model is the stages applied one after another. bbjax cannot
read the order from an arbitrary ``__call__``; give ``example`` and :func:`split` checks
that the chained stages compute what the model computes on it. :func:`from_modules` makes
stages of a user's own split into nnx modules; a :class:`Stages` built directly takes
``(apply, params)`` pairs as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bbjax.errors import InvalidArgument

PyTree = Any
Apply = Callable[[PyTree, Any], Any]


@dataclass(frozen=True)
class Stages:
    """``names[s]`` (the sub-modules stage ``s`` applies, joined by ``+``, or the user's
    name), ``applies[s](params[s], x)`` (pure) and ``params[s]`` (its initial parameters).
    Raises :class:`InvalidArgument` for fewer than one stage, fields of unequal lengths or
    an apply that is not callable."""

    names: tuple[str, ...]
    applies: tuple[Apply, ...]
    params: tuple[PyTree, ...]

    def __post_init__(self) -> None:
        for field in ("names", "applies", "params"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if not self.applies or not len(self.names) == len(self.applies) == len(self.params):
            raise InvalidArgument(f"Stages needs one name, apply and params per stage (at least "
                                  f"one), got {len(self.names)}, {len(self.applies)} and "
                                  f"{len(self.params)}")
        for s, (name, apply) in enumerate(zip(self.names, self.applies)):
            if not isinstance(name, str) or not name:
                raise InvalidArgument(f"stage {s}'s name must be a non-empty str, got {name!r}")
            if not callable(apply):
                raise InvalidArgument(f"stage {s} ({name}): apply is not callable")

    def __len__(self) -> int:
        return len(self.applies)

    def apply(self, params: Sequence[PyTree], x: Any) -> Any:
        """The whole model: every stage's apply in order, with ``params`` per stage."""
        for apply, p in zip(self.applies, params):
            x = apply(p, x)
        return x

    def input_specs(self, x: Any) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The shape and dtype each stage's input has when the model's input is ``x`` (an
        array or ``ShapeDtypeStruct``), then the model's output's: ``len(self) + 1``
        entries, traced (nothing runs)."""
        spec = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
        specs = [spec]
        for apply, p in zip(self.applies, self.params):
            spec = jax.eval_shape(apply, p, spec)
            if not isinstance(spec, jax.ShapeDtypeStruct):
                raise InvalidArgument("a stage's output must be one array (activations cross "
                                      f"a stage boundary as one tensor), got {spec}")
            specs.append(spec)
        return tuple(specs)


def _pure(module: nnx.Module, what: str) -> tuple[Any, PyTree]:
    """``(graphdef, params)`` of a module holding only parameters."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    others = sorted({type(v).__name__ for _, v in nnx.to_flat_state(rest)})
    if others:
        raise InvalidArgument(f"{what} holds state other than parameters ({', '.join(others)}):"
                              " a stage's apply must be a pure function of its parameters")
    return graphdef, nnx.to_pure_dict(params)


def _module_apply(graphdef: Any) -> Apply:
    return lambda params, x: nnx.merge(graphdef, params)(x)


def from_modules(modules: Sequence[nnx.Module], names: Sequence[str] | None = None
                 ) -> Stages:
    """Stages of a user's own split: stage ``s`` is ``modules[s]`` (named ``names[s]``,
    default ``"stage<s>"``). Raises :class:`InvalidArgument` for something that is not an
    nnx module or holds state other than parameters."""
    modules = list(modules)
    names = [f"stage{s}" for s in range(len(modules))] if names is None else list(names)
    applies, params = [], []
    for s, module in enumerate(modules):
        if not isinstance(module, nnx.Module):
            raise InvalidArgument(f"stage {s} must be a flax nnx module, got "
                                  f"{type(module).__name__}")
        graphdef, p = _pure(module, f"stage {s}")
        applies.append(_module_apply(graphdef))
        params.append(p)
    return Stages(tuple(names), tuple(applies), tuple(params))


def _resolve(model: nnx.Module, path: str) -> nnx.Module:
    node: Any = model
    for part in path.split("."):
        if part.isdigit() and hasattr(node, "__getitem__") and hasattr(node, "__len__") \
                and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, nnx.Module) and not part.startswith("_") \
                and hasattr(node, part):
            node = getattr(node, part)
        else:
            raise InvalidArgument(f"model has no sub-module {path!r}")
    if not isinstance(node, nnx.Module):
        raise InvalidArgument(f"{path!r} is a {type(node).__name__}, not a flax nnx module")
    return node


def _param_paths(module: nnx.Module) -> set[tuple]:
    return {path for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def _stage(model: nnx.Module, items: Sequence[Any], s: int) -> tuple[str, Apply, PyTree]:
    steps: list[tuple[str | None, Any]] = []
    params: dict[str, PyTree] = {}
    for item in items:
        if isinstance(item, str):
            if item in params:
                raise InvalidArgument(f"stage {s} names sub-module {item!r} twice")
            graphdef, p = _pure(_resolve(model, item), f"sub-module {item!r}")
            params[item] = p
            steps.append((item, graphdef))
        elif callable(item) and not isinstance(item, nnx.Module):
            steps.append((None, item))
        else:
            raise InvalidArgument(f"stage {s}: an item must be a sub-module's name or a "
                                  f"parameter-free callable, got {type(item).__name__}")
    if not params:
        raise InvalidArgument(f"stage {s} names no sub-module: a stage needs parameters")

    def apply(stage_params: PyTree, x: Any) -> Any:
        for name, step in steps:
            x = step(x) if name is None else nnx.merge(step, stage_params[name])(x)
        return x

    return "+".join(params), apply, params


def split(model: nnx.Module, stages: Sequence[Sequence[Any]], example: Any = None) -> Stages:
    """``model`` cut into ``stages``: each a list of sub-module names (attribute paths,
    ``"."`` between parts, list indices as numbers) and parameter-free callables, applied
    in order; stage ``s``'s parameters are ``{name: that sub-module's parameters}``.

    Every parameter of ``model`` must belong to exactly one named sub-module. With
    ``example`` (a batch of model inputs), the chained stages must compute ``model(
    example)`` (float32 tolerance), which is how the forward order is checked. Raises
    :class:`InvalidArgument` for a model that is not an nnx module, an empty stage list or
    stage, an unknown name, a name claimed twice, a sub-module or model holding state other
    than parameters, a parameter no stage claims, or stages that do not compute the
    model's output on ``example``.
    """
    if not isinstance(model, nnx.Module):
        raise InvalidArgument(f"split needs a flax nnx module, got {type(model).__name__}")
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise InvalidArgument(f"stages must be a non-empty list of lists, got {stages!r}")
    _pure(model, "the model")
    made, claimed = [], {}
    for s, items in enumerate(stages):
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise InvalidArgument(f"stage {s} must be a list of sub-module names and "
                                  f"callables, got {items!r}")
        made.append(_stage(model, items, s))
        for name in made[-1][2]:
            if name in claimed:
                raise InvalidArgument(f"sub-module {name!r} is in stage {claimed[name]} and "
                                      f"stage {s}")
            claimed[name] = s
    owned = set()
    for name in claimed:
        prefix = tuple(int(p) if p.isdigit() else p for p in name.split("."))
        owned |= {prefix + path for path in _param_paths(_resolve(model, name))}
    missing = sorted(".".join(map(str, p)) for p in _param_paths(model) - owned)
    if missing:
        raise InvalidArgument(f"parameters {missing} belong to no stage: every sub-module "
                              "with parameters must be named in one")
    names, applies, params = zip(*made)
    result = Stages(names, applies, params)
    if example is not None:
        want = np.asarray(model(jnp.asarray(example)))
        got = np.asarray(result.apply(result.params, jnp.asarray(example)))
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-5):
            raise InvalidArgument("the stages applied in order do not compute the model's "
                                  "output on example: list the sub-modules (and the "
                                  "callables between them) in the order the model applies them")
    return result
