"""examples/decentralized_dpsgd.py runs small and shows what it claims."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "decentralized_dpsgd.py"


def test_the_exponential_graph_agrees_sooner_and_learns_faster_than_the_ring(tmp_path, capsys,
                                                                            monkeypatch):
    spec = importlib.util.spec_from_file_location("decentralized_dpsgd", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plot = tmp_path / "dpsgd.png"
    histories = example.main(nodes=64, rounds=20, every=10, plot=str(plot))
    ring, exponential = histories["ring(64)"], histories["exponential(64)"]
    params = 60 * 10 + 10
    assert list(ring["bytes_sent"]) == [64 * 2 * params * 4] * 20
    assert list(exponential["bytes_sent"]) == [64 * 6 * params * 4] * 20   # ceil(log2 64)
    assert exponential["consensus_distance"][-1] < ring["consensus_distance"][-1]
    assert exponential["accuracy"][-1] > exponential["accuracy"][9] > 0.1
    assert exponential["accuracy"][-1] > ring["accuracy"][-1]
    assert np.isnan(ring["accuracy"][:9]).all()                        # every 10 rounds
    assert plot.stat().st_size > 0
    out = capsys.readouterr().out
    assert "ring(64) consensus" in out and "plot written" in out
    monkeypatch.setitem(sys.modules, "matplotlib", None)                # bbjax[plot] absent
    example.save_plot(histories, str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().out
