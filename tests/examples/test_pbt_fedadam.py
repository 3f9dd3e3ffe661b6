"""examples/pbt_fedadam.py runs, prints every generation and its population improves."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "pbt_fedadam.py"


def test_pbt_fedadam_example_evolves_and_learns(capsys):
    spec = importlib.util.spec_from_file_location("pbt_fedadam", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    history = module.main(generations=3, members=4)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [f"generation {g}" for g in range(3)]
    assert f"best fitness {history['best_fitness'][2]:.4f}" in lines[2]
    assert lines[3].startswith(f"best member {history.best()} descends from")
    assert history.fitness.shape == (3, 4)
    assert np.isfinite(history.fitness).all()
    assert history["best_fitness"][-1] > history["best_fitness"][0]
    assert history["accuracy"][-1] > history["accuracy"][0]
