"""``bbjax pet coordinator --config pet.toml [--restore]``: serve xaynet's REST API."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PET.TOML",
                        help="the coordinator's settings, server, TLS and store")
    parser.add_argument("--restore", action="store_true",
                        help="reload the store and start a new round from its latest global "
                             "model (else the store must be empty)")
    parser.add_argument("--port", type=int, help="listen on this port instead of the config's")
    parser.add_argument("--store", metavar="URL",
                        help="sqlite:///PATH or redis://HOST:PORT/DB instead of the config's")


def run(args: argparse.Namespace) -> int:
    from bbjax.deploy.pet.config import load_config
    from bbjax.deploy.pet.server import serve

    return serve(load_config(args.config, port=args.port, store=args.store),
                 restore=args.restore)
