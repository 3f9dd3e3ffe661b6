"""The environment of a test subprocess that needs several CPU devices.

JAX fixes its CPU device count when it starts, and the test session runs with one
(``tests/conftest.py``), so multi-device checks run in a subprocess. It keeps the session's
other XLA flags (the cheaper compiles) and its compilation cache, and finds bbjax from the
checkout.
"""

import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\S+")


def forced_devices_env(count: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``count`` host CPU devices
    forced in ``XLA_FLAGS``, ``JAX_PLATFORMS=cpu`` and the checkout on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    others = _DEVICE_COUNT.sub("", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join([f"--xla_force_host_platform_device_count={count}", *others])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
