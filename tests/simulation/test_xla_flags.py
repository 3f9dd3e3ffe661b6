"""``prefer_memory_scheduler``: the flag is added once, a user's own setting wins, and in a
fresh process it shrinks a FedAvg round's temporaries."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bbjax.simulation.xla_flags import MEMORY_SCHEDULER_FLAG, prefer_memory_scheduler


def test_the_flag_is_added_to_the_others_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert prefer_memory_scheduler(env)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {MEMORY_SCHEDULER_FLAG}"
    assert not prefer_memory_scheduler(env)
    assert env["XLA_FLAGS"].count("concurrency") == 1


@pytest.mark.parametrize("given", ["", "--xla_cpu_enable_concurrency_optimized_scheduler=true"])
def test_an_empty_environment_gets_it_and_a_users_choice_is_kept(given):
    env = {"XLA_FLAGS": given} if given else {}
    assert prefer_memory_scheduler(env) is (not given)
    assert env["XLA_FLAGS"] == (given or MEMORY_SCHEDULER_FLAG)


ROUND_TEMP = """
import sys, jax
from bbjax.simulation.xla_flags import prefer_memory_scheduler
if sys.argv[1] == "memory":
    prefer_memory_scheduler()
from bbjax.experiments import FedAvgConfig, build
from bbjax.simulation import Simulation
exp = build(FedAvgConfig(num_clients=1000, clients_per_round=1000, local_steps=10,
                         max_client_size=100, rounds=1))
sim = Simulation(exp.compiled, exp.population)
states = jax.jit(sim.init)(jax.random.PRNGKey(0), sim.init_args)
stats = jax.jit(sim.round).lower(states, jax.random.PRNGKey(1)).compile().memory_analysis()
print(stats.temp_size_in_bytes, stats.argument_size_in_bytes)
"""


def _round_memory(scheduler: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    done = subprocess.run([sys.executable, "-c", ROUND_TEMP, scheduler], capture_output=True,
                          text=True, timeout=600, env={**env, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    temp, argument = map(int, done.stdout.split()[-2:])
    return temp, argument


@pytest.mark.slow
def test_in_a_fresh_process_the_round_keeps_a_fraction_of_the_temporaries():
    default, argument = _round_memory("default")
    memory, _ = _round_memory("memory")
    assert default > argument  # every local step's batches at once
    assert memory < 0.3 * default and memory < argument


def test_the_bbjax_command_asks_for_it(monkeypatch, capsys):
    from bbjax.cli import main
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    assert main(["simulate", "--list"]) == 0
    assert os.environ["XLA_FLAGS"].endswith(MEMORY_SCHEDULER_FLAG)
