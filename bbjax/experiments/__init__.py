"""Ready-made experiments: named configurations and the builders behind ``bbjax simulate``.

:mod:`bbjax.experiments.fedavg`: FedAvg (server rules, SCAFFOLD, PET masking) on federated
data, from a checked :class:`FedAvgConfig` to an :class:`Experiment` that ``run`` simulates.
"""

from bbjax.experiments.fedavg import (CONFIGS, RULES, Experiment, FedAvgConfig, build,
                                      load_config)

__all__ = ["CONFIGS", "RULES", "Experiment", "FedAvgConfig", "build", "load_config"]
