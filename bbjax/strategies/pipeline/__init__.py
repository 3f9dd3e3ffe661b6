"""Pipeline parallelism on devices: ``P`` stages of a model placed on ``P`` devices in one
compiled SPMD program, trained over micro-batches on a GPipe or a 1F1B schedule
(:func:`pipeline`; the schedules themselves in :mod:`~bbjax.strategies.pipeline.schedule`)."""

from bbjax.strategies.pipeline.executor import Pipeline, PipelineState, pipeline
from bbjax.strategies.pipeline.schedule import Schedule, gpipe, one_f_one_b

__all__ = ["Pipeline", "PipelineState", "Schedule", "gpipe", "one_f_one_b", "pipeline"]
