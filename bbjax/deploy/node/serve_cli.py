"""``bbjax node serve ARTIFACT --target CLASS --peer ID --peers peers.toml``: run installed
partitions as a networked node."""

from __future__ import annotations

import argparse

DEFAULT_MAX_ENVELOPE_BYTES = 16 << 20
DEFAULT_MAX_FRAME_BYTES = 4 << 20
MAX_ENVELOPE_CAP = 2**32 - 1  # the envelope's u32 length field
MIN_FRAME_BYTES = 1024  # room for a chunk frame's 146 bytes of header and signature


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", help="a compiled artifact (Compiled.save)")
    parser.add_argument("--target", action="append", required=True, metavar="CLASS",
                        help="a peer class or partition name to install (repeatable)")
    parser.add_argument("--peer", type=int, required=True, help="this node's peer id")
    parser.add_argument("--peers", required=True, metavar="PEERS.TOML",
                        help="every peer's id, class, address and public key")
    parser.add_argument("--key", required=True, metavar="KEY.TOML",
                        help="this node's identity (bbjax keys new)")
    parser.add_argument("--components", required=True, metavar="MODULE:FUNCTION",
                        help="a function of the peer id giving the slot -> component bindings")
    parser.add_argument("--state", required=True, metavar="DB",
                        help="the SQLite file that persists the node; a restart resumes it")
    parser.add_argument("--rounds", type=int, default=0,
                        help="start this many rounds of the entry partitions (0: none)")
    parser.add_argument("--round-timeout", type=float, default=60.0,
                        help="close a round's gathers after this many seconds")
    parser.add_argument("--outputs", metavar="FILE",
                        help="append each round's outputs here as JSON lines")
    parser.add_argument("--exit-after-rounds", action="store_true",
                        help="exit once --rounds rounds have ended and sends are delivered")
    parser.add_argument("--delivery-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="with --exit-after-rounds: exit 1 if frames are still "
                             "undelivered this long after the rounds ended (they stay in "
                             "--state and a restart resends them)")
    parser.add_argument("--max-envelope-bytes", type=_bytes(1), metavar="BYTES",
                        default=DEFAULT_MAX_ENVELOPE_BYTES,
                        help="the largest envelope this node sends or reassembles; set the "
                             "same on every peer (default 16 MiB)")
    parser.add_argument("--max-frame-bytes", type=_bytes(MIN_FRAME_BYTES), metavar="BYTES",
                        default=DEFAULT_MAX_FRAME_BYTES,
                        help="envelopes above this travel in chunks (signed frames of at "
                             "most this size); the largest frame this node admits; set the "
                             "same on every peer (default 4 MiB)")


def _bytes(least: int):
    """An argparse type: an integer in [least, MAX_ENVELOPE_CAP]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not least <= value <= MAX_ENVELOPE_CAP:
            raise argparse.ArgumentTypeError(f"expected an integer in [{least}, "
                                             f"{MAX_ENVELOPE_CAP}], got {text!r}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    from bbjax.deploy.node.serve import run_cli

    return run_cli(args)
