"""The ``bbjax`` command. ``bbjax simulate [CONFIG] [--set FIELD=VALUE ...]`` runs a FedAvg
simulation (default: ``fedavg-synthetic``, FedAvg on Synthetic(1, 1) with 100 clients, 10 per
round), shows a progress bar, prints a summary and writes ``metrics.csv``, ``metrics.json``
and ``metrics.png`` (accuracy and loss per round) to ``--out``.

Exit status: 0 on success, 1 when the run diverged (the metrics of the rounds run are still
written), 2 for any other bbjax error (an invalid configuration, say), with a one-line
message on stderr."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from bbjax.errors import BbjaxError, ConfigError, DivergenceError

if TYPE_CHECKING:
    from bbjax.simulation.history import History


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bbjax`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="bbjax", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a simulated FedAvg experiment")
    sim.add_argument("config", nargs="?", default="fedavg-synthetic",
                     help="a named configuration or a JSON file of its fields "
                          "(default: fedavg-synthetic)")
    sim.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a configuration field (repeatable), e.g. --set rounds=20")
    sim.add_argument("--rounds", type=int, help="shorthand for --set rounds=N")
    sim.add_argument("--out", default="bbjax-run", help="output directory (default: bbjax-run)")
    sim.add_argument("--devices", type=int, help="shard the clients over this many devices")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.add_argument("--allow-divergence", action="store_true",
                     help="keep going when the loss or the model becomes non-finite")
    sim.add_argument("--list", action="store_true", help="list the named configurations")
    args = parser.parse_args(argv)
    try:
        return _simulate(args)
    except BbjaxError as exc:
        message = " ".join(str(exc).split())
        print(f"bbjax: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1 if isinstance(exc, DivergenceError) else 2


def _simulate(args: argparse.Namespace) -> int:
    from bbjax.simulation.experiment import CONFIGS, build, load_config

    if args.list:
        for name, config in CONFIGS.items():
            print(f"{name}: {json.dumps(dataclasses.asdict(config))}")
        return 0
    config = load_config(args.config)
    overrides = dict(_parse_override(item) for item in args.set)
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    config = config.replace(**overrides)
    print(f"bbjax simulate {args.config}: {config.num_clients} clients, "
          f"{config.clients_per_round} per round, {config.rounds} rounds, "
          f"{config.local_steps} local steps, model {config.model}, dataset {config.dataset}")
    started = time.perf_counter()
    experiment = build(config)
    out = Path(args.out)
    try:
        history = experiment.run(progress=not args.no_progress, devices=args.devices,
                                 allow_divergence=args.allow_divergence)
    except DivergenceError as exc:
        _write(exc.history, out)
        raise
    written = _write(history, out)
    print(f"done in {time.perf_counter() - started:.1f} s ({history.seconds:.1f} s simulating, "
          f"compilation included)")
    print(history.summary())
    print("wrote", ", ".join(str(p) for p in written))
    return 0


def _write(history: History, out: Path) -> list[Path]:
    """``metrics.csv``, ``metrics.json`` and (with matplotlib) ``metrics.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [history.to_csv(out / "metrics.csv"), history.to_json(out / "metrics.json")]
    try:
        history.plot(out / "metrics.png", metrics=("accuracy", "test_loss", "train_loss"))
        written.append(out / "metrics.png")
    except ImportError as exc:
        print(f"no plot: {exc}")
    return written


def _parse_override(item: str) -> tuple[str, object]:
    """``FIELD=VALUE`` with VALUE parsed as JSON where it parses, else as a string."""
    field, sep, text = item.partition("=")
    if not sep or not field:
        raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return field, value
