"""History: its rows, last values, CSV and JSON files, summary and plot."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bbjax.simulation import History


@pytest.fixture
def history():
    return History({"train_loss": np.array([2.0, 1.5, 1.0]),
                    "accuracy": np.array([np.nan, 0.5, 0.75])}, seconds=1.5,
                   config={"rounds": 3})


def test_history_rows_last_csv_and_json(history, tmp_path):
    assert history.rounds == 3
    assert history.last() == {"train_loss": 1.0, "accuracy": 0.75}
    with history.to_csv(tmp_path / "m.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0] == {"round": "1", "train_loss": "2.0", "accuracy": ""}
    assert rows[2]["accuracy"] == "0.75"
    data = json.loads(history.to_json(tmp_path / "m.json").read_text())
    assert data["config"] == {"rounds": 3} and data["seconds"] == 1.5
    assert data["diverged_at"] is None
    assert data["rounds"][0] == {"round": 1, "train_loss": 2.0, "accuracy": None}
    assert history.summary() == "accuracy 0.75  train_loss 1"


def test_history_plot_writes_a_png(history, tmp_path):
    history.plot(tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
