"""examples/pet_round.py: PET rounds of 50 participants close with numpy's mean."""

from __future__ import annotations

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "pet_round.py"


def _load():
    spec = importlib.util.spec_from_file_location("pet_round", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pet_round_example_unmasks_the_mean_of_the_updates(capsys):
    summaries = _load().main()
    out = capsys.readouterr().out
    assert [s["round"] for s in summaries] == [1, 2]
    for s in summaries:
        assert not s["failed"]
        assert s["sum"] >= 1 and s["sum2"] == s["sum"] and s["update"] >= 3
        assert s["sum"] + s["update"] <= 50
        assert s["chunks_buffered"] > 0  # updates of 1000 weights travel in chunks
        assert s["rejected"] == s["discarded"] == 0
        # each weight of each model is floored to a multiple of 1e-10 (F32/B0: E = 10**10),
        # scalar 1 exactly: the mean is off by less than 1e-10, plus float64 rounding
        assert s["max_error"] < 1e-10 + 1e-15
    assert out.count("Sum2 -> Unmask") == 2 and "max |unmasked - numpy mean|" in out
