"""Hyperparameters reaching optax: ``optax.inject_hyperparams`` keeps an optimizer's
hyperparameters (e.g. ``learning_rate``) as arrays in its state, so a member's state
carries them, exploit copies them with the rest of the state and :func:`with_hyperparams`
writes the member's current values in before each update."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from bbjax.errors import InvalidArgument


def with_hyperparams(opt_state: Any, values: Mapping[str, jax.Array]) -> Any:
    """``opt_state`` (the state of an ``optax.inject_hyperparams`` optimizer) with each
    of ``values`` written into its ``hyperparams`` (cast to the dtype held there). Raises
    :class:`InvalidArgument` for a state without injected hyperparameters or a name it
    does not hold."""
    held = getattr(opt_state, "hyperparams", None)
    if not isinstance(held, dict):
        raise InvalidArgument(f"with_hyperparams needs the state of an "
                              f"optax.inject_hyperparams optimizer, got "
                              f"{type(opt_state).__name__}")
    unknown = sorted(set(values) - set(held))
    if unknown:
        raise InvalidArgument(f"the optimizer injects {sorted(held)}, not {unknown}")
    new = {name: jnp.asarray(values[name], jnp.asarray(held[name]).dtype)
           if name in values else held[name] for name in held}
    return opt_state._replace(hyperparams=new)
