"""The XLA flag large simulated populations want on CPU.

XLA's CPU compiler schedules for concurrency by default: in a FedAvg round it starts the
data gathers of every local step at once and keeps all their batches alive together, so a
round's temporary buffers are ~2.6x its states (10^4 to 10^5 logistic-regression clients of
20 local steps). Its memory-minimizing scheduler keeps about one step's batches (~0.7x) at
the same speed (``benchmarks/simulate_scaling.py``). XLA reads the flag from ``XLA_FLAGS``
when JAX creates its CPU client, not per compilation (``compiler_options`` do not reach
it), so it is a process setting: the ``bbjax`` command sets it first thing, and a program of
your own calls :func:`prefer_memory_scheduler` before its first JAX computation (or sets
``XLA_FLAGS`` itself).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

MEMORY_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def prefer_memory_scheduler(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Add :data:`MEMORY_SCHEDULER_FLAG` to ``environ["XLA_FLAGS"]`` unless that flag is set
    there already (either way); whether it added it."""
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" in flags:
        return False
    environ["XLA_FLAGS"] = " ".join(filter(None, [flags, MEMORY_SCHEDULER_FLAG]))
    return True
