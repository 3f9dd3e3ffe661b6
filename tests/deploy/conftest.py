"""Fixtures of the deployment tests: every process they start is stopped at the end."""

from __future__ import annotations

import pytest

from tests.deploy.processes import Process


@pytest.fixture
def processes(tmp_path):
    """``start(*args, name=..., module=True)`` runs a :class:`Process` (log in ``tmp_path``);
    all are stopped when the test ends."""
    started: list[Process] = []

    def start(*args: str, name: str = "process", module: bool = True) -> Process:
        process = Process(*args, log=tmp_path / f"{name}-{len(started)}.log", module=module)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
