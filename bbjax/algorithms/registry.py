"""Every named algorithm, built in one call: ``get("fedadam", eta=0.1)``."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from bbjax.algorithms.base import Algorithm
from bbjax.errors import ConfigError


def _algorithm_of(factory: Callable[..., Any]) -> Callable[..., Algorithm]:
    """``factory(**hp).algorithm``, with ``factory``'s signature."""

    @functools.wraps(factory)
    def build(**hyperparameters: Any) -> Algorithm:
        return factory(**hyperparameters).algorithm

    return build


def _codec(factory: Callable[..., Any]) -> Callable[..., Algorithm]:
    """``compress(factory(**hp), num_clients)``: ``factory``'s signature plus the keyword
    ``num_clients``."""
    from bbjax.compression import compress

    def build(num_clients: int | None = None, **hyperparameters: Any) -> Algorithm:
        return compress(factory(**hyperparameters), num_clients=num_clients)

    own = list(inspect.signature(factory).parameters.values())
    extra = inspect.Parameter("num_clients", inspect.Parameter.KEYWORD_ONLY, default=None)
    build.__signature__ = inspect.Signature([*own, extra])
    build.__doc__ = factory.__doc__
    return build


@functools.cache
def _table() -> dict[str, Callable[..., Algorithm]]:
    from bbjax import aggregators, compression, privacy, selection

    rules = {name: _algorithm_of(getattr(aggregators, name)) for name in (
        "fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi", "qfedavg", "median",
        "trimmed_mean", "krum", "bulyan", "scaffold")}
    dp = {"clip": privacy.clip, "gaussian_noise": privacy.gaussian_noise,
          "adaptive_clipping": privacy.adaptive_clipping,
          "local_gaussian": _algorithm_of(privacy.local_gaussian)}
    codecs = {name: _codec(getattr(compression, name)) for name in (
        "uniform_quantization", "stochastic_quantization", "top_k", "hadamard_rotation")}
    selectors = {name: _algorithm_of(getattr(selection, name)) for name in (
        "select_all", "select_fraction", "select_by_tags", "select_available")}
    return {**rules, **dp, **codecs, **selectors}


def names() -> tuple[str, ...]:
    """The names :func:`get` knows, sorted."""
    return tuple(sorted(_table()))


def get(name: str, /, **hyperparameters: Any) -> Algorithm:
    """The algorithm called ``name`` with ``hyperparameters`` (those of its constructor:
    ``bbjax.aggregators.NAME``, ``bbjax.privacy.NAME``, a ``bbjax.compression`` codec
    plus ``num_clients``, or a ``bbjax.selection`` selector).

    Raises :class:`~bbjax.errors.ConfigError` for an unknown name or hyperparameter, listing
    the known ones; invalid values raise the family's own error.
    """
    table = _table()
    if name not in table:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(sorted(table))}",
                          field="name")
    factory = table[name]
    signature = inspect.signature(factory)
    unknown = sorted(set(hyperparameters) - set(signature.parameters))
    if unknown:
        raise ConfigError(f"{name} has no hyperparameters {unknown}; it takes "
                          f"{list(signature.parameters)}", field=unknown[0])
    try:
        signature.bind(**hyperparameters)
    except TypeError as err:
        raise ConfigError(f"{name}: {err}; it takes {list(signature.parameters)}") from err
    return factory(**hyperparameters)
