"""Population-based training, vectorized: a whole population of members trains as one
vmapped program, hyperparameters as traced arrays, exploit and explore inside jit.

- :mod:`~bbjax.strategies.pbt.space`: hyperparameters as ``{name: [n]}`` arrays drawn from a
  :class:`SearchSpace` of :class:`Float`, :class:`Int` and :class:`Categorical`.
- :mod:`~bbjax.strategies.pbt.exploitation`: :func:`exploit` (somatize's
  :class:`Truncation` and :class:`Binary`), the failing rule (:func:`guard`), :class:`Lineage`.
- :mod:`~bbjax.strategies.pbt.exploration`: :func:`explore` (:class:`Perturbation`,
  :class:`Resample`, Ray Tune's :class:`RayTune`), :func:`ray_tune_preset`.
- :func:`evolve`: exploit then explore.
- :func:`run` (:mod:`~bbjax.strategies.pbt.run`): a population of user member functions
  trained, evaluated and evolved, recorded as a :class:`PbtHistory`.
- :func:`with_hyperparams`: the member's values into an ``optax.inject_hyperparams`` state.
- :mod:`~bbjax.strategies.pbt.local`: the JSON strategy's ``"local"`` task.
"""

from __future__ import annotations

from bbjax.strategies.config import (
    Binary,
    Categorical,
    Float,
    Int,
    Perturbation,
    RayTune,
    Resample,
    SearchSpace,
    Truncation,
)
from bbjax.strategies.pbt.evolve import evolve
from bbjax.strategies.pbt.exploitation import (
    Lineage,
    cutoff,
    exploit,
    finite_members,
    guard,
    rank,
)
from bbjax.strategies.pbt.exploration import explore, ray_tune_preset
from bbjax.strategies.pbt.history import PbtHistory
from bbjax.strategies.pbt.optim import with_hyperparams
from bbjax.strategies.pbt.run import run
from bbjax.strategies.pbt.space import (
    Hyperparameters,
    choice_values,
    decode,
    draw,
    sample,
)

__all__ = ["Binary", "Categorical", "Float", "Hyperparameters", "Int", "Lineage",
           "PbtHistory", "Perturbation", "RayTune", "Resample", "SearchSpace", "Truncation",
           "choice_values", "cutoff", "decode", "draw", "evolve", "exploit", "explore",
           "finite_members", "guard", "rank", "ray_tune_preset", "run", "sample",
           "with_hyperparams"]
