"""examples/secure_fedavg.py: FedAvg under PET masking follows the plain FedAvg run."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "secure_fedavg.py"


def _load():
    spec = importlib.util.spec_from_file_location("secure_fedavg_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_secure_fedavg_example_matches_the_plain_run(capsys):
    summary = _load().main(rounds=3)
    out = capsys.readouterr().out
    assert summary["included"] == [5, 5, 5] and summary["unmasked"] == [1, 1, 1]
    # the same states and cohorts: the models differ by float32 noise only
    assert summary["gap"] < 1e-4
    for secure, plain in zip(summary["accuracy"], summary["plain_accuracy"]):
        assert abs(secure - plain) <= 0.01
    assert "max |PET global - plain global|" in out
