"""``bbjax keys new --out key.toml``: a new Ed25519 node identity."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="KEY.TOML",
                        help="where to write the secret key (mode 0600; never overwritten)")


def run(args: argparse.Namespace) -> int:
    from bbjax.deploy.node.identity import new_key_file

    public = new_key_file(args.out)
    print(f"wrote {args.out}; public key {public.hex()}")
    return 0
