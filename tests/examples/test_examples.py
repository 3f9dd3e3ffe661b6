"""The runnable examples run and do what they claim."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_trains_on_one_node():
    losses = _load("quickstart").main(steps=40)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_export_train_step_example_agrees_with_plain_jax(capsys):
    _load("export_train_step").main(steps=20, batch=64)
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("max |param difference|"))
    assert float(line.rsplit(":", 1)[1]) < 1e-5
