"""examples/model_parallel.py: simulate, the Nodes and the unsplit model end equal (slow:
tests/strategies/model_parallel covers the same equalities by default)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "model_parallel.py"


@pytest.mark.slow
def test_simulate_nodes_and_one_device_end_with_equal_parameters(capsys):
    spec = importlib.util.spec_from_file_location("model_parallel_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    differences = example.main(rounds=3, micro_batches=2)
    assert len(differences) == 6  # two comparisons for each of the three stages
    assert max(differences.values()) < 1e-5
    out = capsys.readouterr().out
    assert "model_parallel_stage1_forward" in out and "max |param difference|" in out
