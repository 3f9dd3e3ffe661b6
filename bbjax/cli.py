"""The ``bbjax`` command. ``bbjax simulate [CONFIG] [--set FIELD=VALUE ...]`` runs a FedAvg
simulation (default: ``fedavg-synthetic``, FedAvg on Synthetic(1, 1) with 100 clients, 10 per
round), shows a progress bar, prints a summary and writes ``metrics.csv``, ``metrics.json``
and ``metrics.png`` (accuracy and loss per round) to ``--out``.

``--checkpoint-dir DIR [--checkpoint-every K]`` writes checkpoints; ``--resume DIR``
continues that run from its latest one, exactly as if it had not stopped.

``bbjax train STRATEGY.json [--set PATH=VALUE ...]`` runs a training strategy (somatize's
``TrainingStrategy`` JSON, :mod:`bbjax.strategies.config`; ``--set aggregation.mu=0.1``
changes a field by its dotted path) on the same data and with the same progress bar,
summary and outputs as ``bbjax simulate``.

``bbjax export-client ARTIFACT --target CLASS -o client.onnx`` writes the (inlined) partition
of peer class CLASS of a saved artifact as a standalone ONNX model for
:class:`bbjax.onnxclient.OnnxClient` (docs/onnxclient.md).

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
from typing import TYPE_CHECKING, Any, Callable, Sequence

from bbjax.errors import BbjaxError, ConfigError, DivergenceError
from bbjax.simulation.xla_flags import prefer_memory_scheduler

if TYPE_CHECKING:
    from bbjax.simulation.history import History


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bbjax`` console script; returns the exit status. Before any JAX
    computation it asks XLA for its memory-minimizing CPU scheduler
    (:mod:`bbjax.simulation.xla_flags`) unless ``XLA_FLAGS`` chooses otherwise."""
    prefer_memory_scheduler()
    parser = argparse.ArgumentParser(prog="bbjax", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a simulated FedAvg experiment")
    sim.add_argument("config", nargs="?",
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
    sim.add_argument("--checkpoint-dir", metavar="DIR",
                     help="write a checkpoint to DIR after the last round (and every K rounds "
                          "with --checkpoint-every)")
    sim.add_argument("--checkpoint-every", type=int, metavar="K",
                     help="also write a checkpoint after every K-th round")
    sim.add_argument("--resume", metavar="DIR",
                     help="continue the run checkpointed in DIR from its latest checkpoint, "
                          "with its configuration (--rounds and --set change it), writing "
                          "further checkpoints to DIR unless --checkpoint-dir says otherwise")
    sim.add_argument("--list", action="store_true", help="list the named configurations")
    train = commands.add_parser("train", help="run a training strategy (a JSON file)")
    train.add_argument("strategy", help="a TrainingStrategy JSON file, e.g. "
                                        "examples/strategies/federated_fedavg.json")
    train.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                       help="set a field by its dotted path (repeatable), e.g. --set "
                            "rounds=20 --set training.learning_rate=0.05")
    train.add_argument("--rounds", type=int, help="shorthand for --set rounds=N")
    train.add_argument("--out", default="bbjax-run",
                       help="output directory (default: bbjax-run)")
    train.add_argument("--devices", type=int, help="shard the peers over this many devices")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--allow-divergence", action="store_true",
                       help="keep going when the loss or the model becomes non-finite")
    client = commands.add_parser("export-client",
                                 help="write a peer class's partition as a model onnxruntime runs")
    client.add_argument("artifact", help="a compiled artifact (Compiled.save)")
    client.add_argument("--target", required=True, metavar="CLASS",
                        help="the peer class (or partition name) to export, e.g. client")
    client.add_argument("-o", "--out", required=True, metavar="FILE",
                        help="where to write the client model (.onnx)")
    deployed = _add_deploy_commands(commands)
    args = parser.parse_args(argv)
    try:
        if args.command in deployed:
            return _run_deployed(args)
        command = {"export-client": _export_client, "train": _train}.get(args.command,
                                                                         _simulate)
        return command(args)
    except BbjaxError as exc:
        message = " ".join(str(exc).split())
        print(f"bbjax: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1 if isinstance(exc, DivergenceError) else 2


# The networked commands: group -> {command: (module, help)}. Each module defines
# ``add_arguments(parser)`` (importing nothing heavy) and ``run(args) -> int``.
_DEPLOY_COMMANDS = {
    "pet": {"coordinator": ("bbjax.deploy.pet.coordinator_cli",
                            "serve the PET coordinator's REST API (docs/deploy.md)"),
            "participants": ("bbjax.deploy.pet.participants_cli",
                             "run N PET participants against a coordinator URL")},
    "node": {"serve": ("bbjax.deploy.node.serve_cli",
                       "run an installed partition as a networked node")},
    "keys": {"new": ("bbjax.deploy.node.keys_cli", "make a node's Ed25519 identity")},
}


def _add_deploy_commands(commands) -> set[str]:
    import importlib

    for group, members in _DEPLOY_COMMANDS.items():
        sub = commands.add_parser(group, help=f"{group} commands (docs/deploy.md)")
        subcommands = sub.add_subparsers(dest="subcommand", required=True)
        for name, (module, help_text) in members.items():
            parser = subcommands.add_parser(name, help=help_text, description=help_text)
            importlib.import_module(module).add_arguments(parser)
            parser.set_defaults(deploy_module=module)
    return set(_DEPLOY_COMMANDS)


def _run_deployed(args: argparse.Namespace) -> int:
    import importlib

    try:
        return importlib.import_module(args.deploy_module).run(args)
    except ModuleNotFoundError as exc:
        if exc.name in ("starlette", "uvicorn", "httpx", "redis"):
            raise ConfigError(f"{exc.name} is not installed: pip install 'bbjax[deploy]' "
                              "(and 'bbjax[redis]' for the Redis store)") from None
        raise


def _export_client(args: argparse.Namespace) -> int:
    from bbjax.compiler import load
    from bbjax.compiler.export_client import CLIENT_METADATA, export_client

    try:
        compiled = load(args.artifact)
    except BbjaxError:
        raise
    except Exception as exc:  # noqa: BLE001 - a missing file, bytes that are no ONNX model
        raise ConfigError(f"cannot read artifact {args.artifact!r}: {type(exc).__name__}: "
                          f"{exc}") from None
    model = export_client(compiled, args.target)
    meta = json.loads({p.key: p.value for p in model.metadata_props}[CLIENT_METADATA])
    _save_model(model, args.out)
    ports = ", ".join([f"receives {r['port']!r} from {r['source_class']}" for r in meta["receives"]]
                      + [f"sends {s['port']!r} to {s['dest_class']}" for s in meta["sends"]])
    leaves = sum(len(s["inputs"]) for s in meta["state"].values())
    print(f"wrote {args.out}: {meta['partition']} ({ports}; {leaves} state leaves of slots "
          f"{sorted(meta['state'])})")
    return 0


def _save_model(model: Any, path: str) -> None:
    """Write ``model`` to ``path`` (:class:`ConfigError` when it cannot be written)."""
    import onnx

    try:
        onnx.save(model, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path!r}: {exc}") from None


def _simulate(args: argparse.Namespace) -> int:
    from bbjax.simulation import checkpoint
    from bbjax.experiments import CONFIGS, FedAvgConfig, build, load_config

    if args.list:
        for name, config in CONFIGS.items():
            print(f"{name}: {json.dumps(dataclasses.asdict(config))}")
        return 0
    checkpoint_dir = args.checkpoint_dir
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError(f"--resume takes the configuration from the checkpoint; leave "
                              f"out {args.config!r} (--set FIELD=VALUE changes a field)")
        meta = checkpoint.read_meta(args.resume)
        config = FedAvgConfig().replace(**meta["config"])
        checkpoint_dir = checkpoint_dir or args.resume
        source = f"--resume {args.resume} (after round {meta['round']})"
    else:
        config = load_config(args.config or "fedavg-synthetic")
        source = args.config or "fedavg-synthetic"
    overrides = dict(_parse_override(item) for item in args.set)
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    config = config.replace(**overrides)
    if args.checkpoint_every is not None and (checkpoint_dir is None
                                              or args.checkpoint_every < 1):
        raise ConfigError(f"--checkpoint-every must be an integer >= 1 with --checkpoint-dir "
                          f"or --resume, got {args.checkpoint_every}")
    if checkpoint_dir is not None:  # fail before generating data and compiling
        checkpoint.check_writable(checkpoint_dir, args.resume)
    print(f"bbjax simulate {source}: {config.num_clients} clients, "
          f"{config.clients_per_round} per round, {config.rounds} rounds, "
          f"{config.local_steps} local steps, model {config.model}, dataset {config.dataset}")
    started = time.perf_counter()
    experiment = build(config)
    return _run_and_write(lambda: experiment.run(
        progress=not args.no_progress, devices=args.devices,
        allow_divergence=args.allow_divergence, checkpoint_dir=checkpoint_dir,
        checkpoint_every=args.checkpoint_every, resume=args.resume), Path(args.out), started)


def _train(args: argparse.Namespace) -> int:
    from bbjax.strategies.build import build
    from bbjax.strategies.config import load

    overrides = dict(_parse_override(item) for item in args.set)
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    strategy = load(args.strategy, overrides)
    shown = {k: v for k, v in strategy.to_json().items() if k != "training"}
    print(f"bbjax train {args.strategy}: {json.dumps(shown)}")
    started = time.perf_counter()
    run = build(strategy)
    return _run_and_write(lambda: run.run(progress=not args.no_progress, devices=args.devices,
                                          allow_divergence=args.allow_divergence),
                          Path(args.out), started)


def _run_and_write(run: Callable[[], History], out: Path, started: float) -> int:
    """Run, write the metrics and plot to ``out`` (also when the run diverged) and print
    the time taken, the summary and the files written."""
    try:
        history = run()
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
