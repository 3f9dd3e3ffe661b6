"""examples/deploy_fedavg: 5 node processes, one killed and restarted, end on the
in-process FedAvg's model."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[2] / "examples" / "deploy_fedavg" / "launch.py"


@pytest.mark.slow
def test_the_deployed_fedavg_survives_a_kill_and_equals_the_in_process_run(tmp_path,
                                                                           monkeypatch):
    monkeypatch.syspath_prepend(str(LAUNCH.parent))
    spec = importlib.util.spec_from_file_location("deploy_fedavg_launch", LAUNCH)
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    result = launch.main(rounds=3, workdir=tmp_path)
    assert result["restarted"]
    assert result["rounds"] == [1, 2, 3]
    assert result["max_abs_diff"] <= 1e-6
    sys.modules.pop("app", None), sys.modules.pop("build", None)
