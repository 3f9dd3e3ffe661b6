"""``bbjax pet participants -n N --url URL``: N PET participants over HTTP (xaynet's
test-drive)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--count", type=int, required=True, help="how many participants")
    parser.add_argument("--url", required=True, help="the coordinator, e.g. http://127.0.0.1:8081")
    parser.add_argument("--rounds", type=int, default=1,
                        help="stop once this many rounds have ended (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="derives each participant's identity and local models")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="keep each participant's saved state here; a restart with the "
                             "same DIR continues where it stopped")
    parser.add_argument("--max-message-size", type=int, default=None,
                        help="chunk messages above this many bytes (xaynet multipart; "
                             "default 3912 as xaynet's SDK, 0: never)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up after this many seconds (exit status 1)")
    parser.add_argument("--ca", metavar="PEM", help="trust this certificate (TLS coordinators)")


def run(args: argparse.Namespace) -> int:
    from bbjax.deploy.pet.participants import run_cli

    return run_cli(args)
