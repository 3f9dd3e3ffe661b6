"""Shared benchmark helpers: interleaved timing, machine description, result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

RESULTS_DIR = Path(__file__).parent / "results"
RESULTS_MD = Path(__file__).parent / "RESULTS.md"


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, calls: int) -> dict[str, list[float]]:
    """Seconds per call of each function, sampled ``reps`` times, alternating which runs first.

    Every sample runs ``calls`` back-to-back calls and blocks on the last result.
    """
    for fn in fns.values():  # compile and warm up
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls):
                out = fn()
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / calls)
    return samples


def machine() -> str:
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return f"{platform.machine()} {os.cpu_count()} cores, {device.platform}: {kind}"


def write(name: str, record: dict[str, Any], cells: list[str]) -> Path:
    """Write the JSON record and add the row ``| date | machine | *cells |`` under the
    benchmark's heading in RESULTS.md."""
    RESULTS_DIR.mkdir(exist_ok=True)
    record = {"benchmark": name, "date": dt.date.today().isoformat(), "machine": machine(),
              "jax": jax.__version__, **record}
    table_row = "| " + " | ".join([record["date"], record["machine"], *cells]) + " |"
    path = RESULTS_DIR / f"{name}_{jax.devices()[0].platform}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    heading = f"## {name}"
    if heading not in text:
        raise SystemExit(f"{RESULTS_MD} has no section {heading!r}")
    head, rest = text.split(heading, 1)
    section, sep, tail = rest.partition("\n## ")
    section = section.rstrip("\n") + "\n" + table_row + "\n"
    RESULTS_MD.write_text(head + heading + section + ("\n" + sep + tail if sep else ""))
    return path


def median_ms(values: list[float]) -> float:
    return float(np.median(values) * 1e3)


def measure_on_forced_devices(script: str, devices: int, argv: list[str]) -> dict[str, Any]:
    """Run ``script --child *argv`` on ``devices`` forced host CPU devices (JAX fixes the
    count when it starts, so the measurement needs a process of its own) and return the
    JSON of the last line it prints; its stderr passes through. Raises SystemExit when it
    fails."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, os.path.abspath(script), "--child", *argv],
                          env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit("the measurement failed (its stderr is above)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def answer_as_child(args: Any, measure: Callable[[Any], dict[str, Any]]) -> bool:
    """In the child that :func:`measure_on_forced_devices` starts (``args.child``), print
    the JSON of ``measure`` on the other arguments and return True; else return False."""
    if not args.child:
        return False
    print(json.dumps(measure(type(args)(**{k: v for k, v in vars(args).items()
                                           if k != "child"}))))
    return True
