"""``History``: per-round metrics of a simulation, with CSV, JSON and a plot."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class History:
    """``metrics[name]``: one float per round (NaN in rounds where it was not measured, e.g.
    evaluations every k rounds, and where it was NaN); ``states``: every peer's slot states
    after the last round; ``seconds``: wall time of the whole ``simulate`` call;
    ``config``: a JSON-ready description of the run; ``diverged_at``: the first round
    (counting from 0) whose loss or states were non-finite, or None; ``compile_seconds``:
    the part of ``seconds`` spent building, tracing and compiling the programs (about 0
    when they came from ``simulate``'s cache); ``run_seconds``: the part spent running them
    (initial states, rounds, evaluations) and fetching their results."""

    metrics: dict[str, np.ndarray]
    states: Any = None
    seconds: float = 0.0
    config: dict = field(default_factory=dict)
    diverged_at: int | None = None
    compile_seconds: float = 0.0
    run_seconds: float = 0.0

    @property
    def rounds(self) -> int:
        """Number of rounds recorded."""
        return len(next(iter(self.metrics.values()))) if self.metrics else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.metrics[name]

    def last(self) -> dict[str, float]:
        """Each metric's last value that is not NaN."""
        result = {}
        for name, values in self.metrics.items():
            measured = values[~np.isnan(values)]
            if measured.size:
                result[name] = float(measured[-1])
        return result

    def summary(self) -> str:
        """One line: ``diverged at round k`` when the run diverged, then each metric's last
        value."""
        text = "  ".join(f"{name} {value:.4g}" for name, value in sorted(self.last().items()))
        if self.diverged_at is None:
            return text
        return f"diverged at round {self.diverged_at} (counting from 0); last values: {text}"

    def rows(self) -> list[dict[str, float | None]]:
        """One dict per round: ``round`` (counting from 1) and every metric (None where NaN)."""
        return [{"round": r + 1, **{name: _number(values[r]) for name, values in
                                    self.metrics.items()}} for r in range(self.rounds)]

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per round (empty cells where a metric was not measured)."""
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["round", *self.metrics])
            writer.writeheader()
            for row in self.rows():
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return path

    def to_json(self, path: str | Path) -> Path:
        """Write strict JSON ``{"config", "seconds", "compile_seconds", "run_seconds",
        "diverged_at", "rounds": [row, ...]}``: null where a value is NaN (not measured, or
        diverged) or infinite."""
        path = Path(path)
        rows = [{k: v if v is None or math.isfinite(v) else None for k, v in row.items()}
                for row in self.rows()]
        path.write_text(json.dumps({"config": self.config, "seconds": self.seconds,
                                    "compile_seconds": self.compile_seconds,
                                    "run_seconds": self.run_seconds,
                                    "diverged_at": self.diverged_at, "rounds": rows},
                                   indent=1, allow_nan=False))
        return path

    def plot(self, path: str | Path | None = None,
             metrics: Sequence[str] = ("accuracy", "train_loss")) -> Any:
        """A figure with one panel per metric present (default: accuracy and training
        loss) against the round; saved as an image at ``path`` when given. Needs matplotlib
        (``pip install 'bbjax[plot]'``)."""
        try:
            import matplotlib
            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("History.plot needs matplotlib: pip install 'bbjax[plot]'") from exc
        names = [m for m in metrics if m in self.metrics] or list(self.metrics)
        figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4),
                                    squeeze=False)
        rounds = np.arange(1, self.rounds + 1)
        for ax, name in zip(axes[0], names):
            values = self.metrics[name]
            measured = ~np.isnan(values)
            ax.plot(rounds[measured], values[measured], marker="." if measured.sum() < 60 else "")
            ax.set_xlabel("round")
            ax.set_title(name)
            ax.grid(alpha=0.3)
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=120)
            plt.close(figure)
        return figure


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
