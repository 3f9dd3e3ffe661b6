"""Model-parallel training (somatize's ``ModelParallel``) with the backward pass across
partitions: a model cut into stages (:mod:`~bbjax.strategies.model_parallel.stages`), each
a peer holding its own parameters and optimizer
(:mod:`~bbjax.strategies.model_parallel.stage`), trained one step a round by
:class:`ModelParallelRound`, GPipe-pipelined over micro-batches."""

from bbjax.strategies.model_parallel.layered import LayeredMLP
from bbjax.strategies.model_parallel.nodes import install_stages, train_round
from bbjax.strategies.model_parallel.round import (
    ModelParallelRound,
    forward_class,
    population,
    slot_name,
    stage_components,
)
from bbjax.strategies.model_parallel.stage import StageState, micro_batch, stage
from bbjax.strategies.model_parallel.stages import Stages, from_modules, split

__all__ = ["LayeredMLP", "ModelParallelRound", "StageState", "Stages", "forward_class",
           "from_modules", "install_stages", "micro_batch", "population", "slot_name",
           "split", "stage", "stage_components", "train_round"]
