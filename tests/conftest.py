"""Test-session settings: one CPU device, cheaper XLA compiles, and one XLA compilation cache
for the whole run.

The tests' programs are small and compiled once each, so LLVM's optimization passes cost far
more than they save: the session compiles at backend optimization level 0 (the same HLO and
results, less optimized machine code).

Many tests compile the same programs (the same small experiments, in several xdist workers
and subprocesses), so the session shares JAX's persistent compilation cache in a fresh
directory: the first process to compile a program stores it, the others load it. The
directory is made by the process that starts the session (its environment reaches the
workers and the subprocesses) and removed when that process ends.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="bbjax-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
