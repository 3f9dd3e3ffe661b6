"""Components: a role, a state ``init`` and pure methods ``fn(state, *inputs) -> (state, outputs)``.

The roles and their method contracts live in :mod:`bbjax.components.roles`; ready-made
components are built by the factories re-exported here.
"""

from bbjax.components.array_data_source import ArrayDataState, array_data_source
from bbjax.components.backend import backend
from bbjax.components.component import Component
from bbjax.errors import ComponentError
from bbjax.components.fixed_view_selector import FixedViewState, fixed_view_selector
from bbjax.components.flax_model import ModelState, flax_model
from bbjax.components.roles import CONTRACTS, Contract, MethodSpec, Role, contract
from bbjax.components.adapters import (CodecState, RuleAggregatorState, SelectorState,
                                       codec_component, rule_aggregator, selector_component)
from bbjax.components.fedprox_model import ProximalState, fedprox_model, proximal_term
from bbjax.components.padded_data_source import PaddedDataState, padded_data_source
from bbjax.components.replay_data_source import ReplayState, replay_data_source
from bbjax.components.scaffold_model import ControlState, scaffold_model
from bbjax.components.status import Status
from bbjax.components.topk_index import TopKIndexState, topk_index
from bbjax.components.weighted_mean import WeightedMeanState, weighted_mean

__all__ = [
    "CONTRACTS",
    "ArrayDataState",
    "CodecState",
    "ControlState",
    "RuleAggregatorState",
    "SelectorState",
    "Component",
    "ComponentError",
    "Contract",
    "FixedViewState",
    "MethodSpec",
    "ProximalState",
    "ModelState",
    "PaddedDataState",
    "ReplayState",
    "Role",
    "Status",
    "TopKIndexState",
    "WeightedMeanState",
    "array_data_source",
    "backend",
    "codec_component",
    "contract",
    "fedprox_model",
    "fixed_view_selector",
    "flax_model",
    "padded_data_source",
    "proximal_term",
    "replay_data_source",
    "rule_aggregator",
    "scaffold_model",
    "selector_component",
    "topk_index",
    "weighted_mean",
]
