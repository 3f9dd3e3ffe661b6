"""Aggregation rules: ``agg = NAME(**hyperparameters)``, ``state = agg.init(global_params)``,
``new_global, state, present, rejected = agg.apply(state, global_params, client_params,
weights, mask)`` (or ``new_global, state = agg.aggregate(...)``), and the same rule on the
one ``bbjax.algorithms`` contract: ``update, state = agg.update(client_updates, state,
global_params, weights=..., mask=...)`` (``agg.algorithm``).

See :mod:`bbjax.aggregators.base` for the shared conventions and ``docs/algorithms.md`` for
the table of rules, papers, defaults and Flower names.
"""

from bbjax.aggregators.base import Aggregation, Aggregator
from bbjax.algorithms.base import EmptyState

from bbjax.errors import AggregatorError
from bbjax.aggregators.fedavg import FedAvgMState, fedavg, fedavgm
from bbjax.aggregators.fedopt import FedOptState, fedadagrad, fedadam, fedyogi
from bbjax.aggregators.fedprox import fedprox
from bbjax.aggregators.qfedavg import qfedavg
from bbjax.aggregators.robust import bulyan, krum, median, trimmed_mean
from bbjax.aggregators.scaffold import (ScaffoldState, scaffold, scaffold_control_update,
                                        scaffold_gradient)

__all__ = [
    "Aggregation", "Aggregator", "AggregatorError", "EmptyState", "FedAvgMState", "FedOptState",
    "ScaffoldState", "bulyan", "fedadagrad", "fedadam", "fedavg", "fedavgm", "fedprox",
    "fedyogi", "krum", "median", "qfedavg", "scaffold", "scaffold_control_update",
    "scaffold_gradient", "trimmed_mean",
]
