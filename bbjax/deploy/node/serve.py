"""``bbjax node serve``: installed partitions as a node on HTTP, persisted in SQLite.

Inbound frames pass the gate (signature, sender, replay) and are delivered and persisted
before the 200 answer; each poll's outbound envelopes become signed frames, persisted with
the state in one transaction, then POSTed per peer in order until delivered. A restart
resumes from the store: the state, the unsent frames and the gate's replay counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
from collections import Counter

import httpx
import numpy as np

from bbjax.deploy.backoff import Backoff
from bbjax.deploy.bodies import BodyRefused, read_body
from bbjax.deploy.serving import Listen, uvicorn_server
from bbjax.errors import ConfigError

MAX_FRAME_BYTES = 4 << 20
"""Envelopes above this travel in chunks (signed frames of at most this size)."""
FORBIDDEN = {"unknown_key", "impersonation", "bad_signature"}


def _url(address: str) -> str:
    return address.rstrip("/") if "://" in address else f"http://{address}"


def _listen(address: str) -> Listen:
    host, _, port = _url(address).split("://", 1)[1].rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"peer address {address!r}: expected host:port")
    return Listen(host=host, port=int(port))


def resolve_targets(compiled, targets: list[str]) -> list[str]:
    """Partition names for ``targets``: each a partition name (or its part before ``#``)
    or a peer class (its main-phase partitions)."""
    from bbjax.compiler.program import Program

    program = Program.of(compiled)
    names: list[str] = []
    for target in targets:
        found = [p.name for p in program.partitions
                 if target in (p.name, p.name.split("#", 1)[0])]
        found = found or [p.name for p in program.phase("main") if p.peer_class == target]
        if not found:
            raise ConfigError(f"--target {target!r}: no partition or peer class of that name; "
                              f"partitions: {[p.name for p in program.partitions]}")
        names += [n for n in found if n not in names]
    return names


class NodeHost:
    """One node, its store, gate and senders (see the module docstring)."""

    def __init__(self, args: argparse.Namespace):
        import bbjax
        from bbjax.compiler import load
        from bbjax.deploy.node.components import load_components
        from bbjax.deploy.node.gate import Gate
        from bbjax.deploy.node.identity import Identity, load_key_file
        from bbjax.deploy.node.peers import load_peers
        from bbjax.deploy.node.store import NodeStore
        from bbjax.runtime import Limits, NodeConfig
        from bbjax.runtime.node_state import state_from_bytes

        self.args = args
        self.peers = load_peers(args.peers)
        self.me = self.peers.by_id(args.peer)
        self.identity = Identity(args.peer, load_key_file(args.key))
        compiled = load(args.artifact)
        cap = args.max_envelope_bytes
        limits = Limits(max_envelope_bytes=cap, max_fill_bytes=cap)
        self.node = bbjax.install(args.peer, compiled, resolve_targets(compiled, args.target),
                                  load_components(args.components, args.peer),
                                  NodeConfig(peers=self.peers.classes(), limits=limits))
        self.store = NodeStore(args.state)
        saved = self.store.state()
        if saved is not None:
            self.node.state = state_from_bytes(saved, self.node.ctx)
        self.meta = self.store.meta()
        self.gate = Gate(args.peer, self.peers, max_frame_bytes=MAX_FRAME_BYTES,
                         max_transfer_bytes=cap, last_seq=self.store.last_seq())
        self.refused: Counter = Counter()
        self.admitted = 0
        self.queues: dict[int, asyncio.Queue] = {}
        self.unsent = {seq for seq, _, _ in self.store.outbox()}
        self.deadline = math.inf
        self.rounds_ended = math.inf
        self.exit_code = 0
        self.wake = asyncio.Event()
        self.done = asyncio.Event()

    def persist(self, add=(), remove=()) -> None:
        from bbjax.runtime.node_state import state_to_bytes

        self.store.commit(state_to_bytes(self.node.state), add, remove,
                          dict(self.gate.last_seq), self.meta)

    # inbound
    async def envelope(self, request):
        from starlette.responses import JSONResponse

        from bbjax.deploy.node.gate import Refused

        try:
            data = await read_body(request, MAX_FRAME_BYTES + 4096, 30.0)
        except BodyRefused as e:
            self.refused[e.reason] += 1
            return JSONResponse({"refused": e.reason, "detail": e.detail}, e.status)
        verdict = self.gate.admit(data, time.time_ns())
        if isinstance(verdict, Refused):
            self.refused[verdict.reason] += 1
            status = 403 if verdict.reason in FORBIDDEN else 409 \
                if verdict.reason == "replay" else 400
            return JSONResponse({"refused": verdict.reason, "detail": verdict.detail}, status)
        self.admitted += 1
        if verdict.envelope is not None:  # a chunk that completes none changes no state:
            self.node.deliver(verdict.envelope)  # the gate's persisted seq stays before it
            self.persist()
            self.wake.set()
        return JSONResponse({"admitted": True})

    async def metrics(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"admitted": self.admitted, "refused": dict(self.refused),
                             "outbox": len(self.unsent), **self.meta})

    async def health(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"peer": self.args.peer, "rounds_done": self.meta["rounds_done"]})

    # outbound
    def enqueue(self, seq: int, peer: int, frame: bytes) -> None:
        if peer not in self.queues:
            self.queues[peer] = asyncio.Queue()
            asyncio.get_running_loop().create_task(self.sender(peer, self.queues[peer]))
        self.queues[peer].put_nowait((seq, frame))

    async def sender(self, peer: int, queue: asyncio.Queue) -> None:
        url = _url(self.peers.by_id(peer).address) + "/envelope"
        backoff = Backoff(base=0.05, cap=1.0)
        async with httpx.AsyncClient(timeout=30.0) as client:
            while True:
                seq, frame = await queue.get()
                attempt = 0
                while True:
                    try:
                        status = (await client.post(url, content=frame)).status_code
                    except httpx.HTTPError:
                        status = None
                    if status in (200, 409):  # 409: admitted before a restart of ours
                        self.store.remove(seq)
                        self.unsent.discard(seq)
                        self.node.report_send_success(peer)
                        self.wake.set()
                        break
                    self.node.report_send_failure(peer)
                    await asyncio.sleep(backoff.delay(attempt))
                    attempt += 1

    # the poll loop
    def step(self) -> None:
        from bbjax.deploy.node.frames import encode_frames
        from bbjax.runtime import AppOutput, Outbound

        args = self.args
        now = time.monotonic()
        if self.meta["rounds_started"] < args.rounds \
                and self.meta["rounds_done"] == self.meta["rounds_started"]:
            self.node.start()
            self.meta["rounds_started"] += 1
            self.deadline = now + args.round_timeout
        elif self.meta["rounds_done"] < self.meta["rounds_started"] and now > self.deadline:
            for port in self.node.ctx.gather_ports:
                self.node.close(port)
            self.deadline = math.inf
        steps = self.node.poll()
        rows = []
        for s in steps:
            if isinstance(s, Outbound):
                frames = encode_frames(self.identity, s.peer, self.meta["next_seq"], s.data,
                                       max_frame_bytes=MAX_FRAME_BYTES,
                                       timestamp_ns=time.time_ns())
                rows += [(self.meta["next_seq"] + i, s.peer, f) for i, f in enumerate(frames)]
                self.meta["next_seq"] += len(frames)
        outputs = {s.name: np.asarray(s.value).tolist() for s in steps
                   if isinstance(s, AppOutput)}
        if outputs:
            self.meta["rounds_done"] += 1
            self.deadline = math.inf
        if steps or outputs:
            self.persist(add=rows)
        if outputs and args.outputs:
            with open(args.outputs, "a") as f:
                f.write(json.dumps({"round": self.meta["rounds_done"], "peer": args.peer,
                                    "outputs": outputs}) + "\n")
        for seq, peer, frame in rows:
            self.unsent.add(seq)
            self.enqueue(seq, peer, frame)

    def finished(self, now: float) -> bool:
        """With ``--exit-after-rounds``: whether the rounds ended and every frame was
        delivered, or ``--delivery-timeout`` passed since they ended (``exit_code`` 1)."""
        args = self.args
        if not args.exit_after_rounds or self.meta["rounds_done"] < args.rounds:
            return False
        if not self.unsent:
            return True
        self.rounds_ended = min(self.rounds_ended, now)
        if now - self.rounds_ended <= args.delivery_timeout:
            return False
        peers = sorted({peer for _, peer, _ in self.store.outbox()})
        print(f"bbjax: node {args.peer}: {len(self.unsent)} frames to peers {peers} undelivered "
              f"{args.delivery_timeout:g} s after its rounds ended; they stay in {args.state} "
              "and a restart resends them", file=sys.stderr, flush=True)
        self.exit_code = 1
        return True

    async def drive(self) -> None:
        for seq, peer, frame in self.store.outbox():
            self.enqueue(seq, peer, frame)
        while not self.finished(time.monotonic()):
            self.step()
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        self.write_final()
        self.done.set()

    def write_final(self) -> None:
        import jax

        flat = jax.tree_util.tree_flatten_with_path(dict(self.node.states))[0]
        np.savez(f"{self.args.state}.final.npz",
                 **{jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat})


async def _serve(host: NodeHost) -> int:
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = Starlette(routes=[Route("/envelope", host.envelope, methods=["POST"]),
                            Route("/metrics", host.metrics), Route("/health", host.health)])
    server = uvicorn_server(app, _listen(host.me.address))
    server.install_signal_handlers = lambda: None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = loop.create_task(server.serve())
    driving = loop.create_task(host.drive())
    waits = [loop.create_task(stop.wait()), loop.create_task(host.done.wait()), serving]
    await asyncio.wait(waits + [driving], return_when=asyncio.FIRST_COMPLETED)
    if driving.done() and driving.exception() is not None:
        raise driving.exception()
    server.should_exit = True
    await serving
    host.store.close()
    return host.exit_code


def run_cli(args: argparse.Namespace) -> int:
    """Serve the node of ``args`` (see ``serve_cli``) until SIGTERM (0) or, with
    ``--exit-after-rounds``, until its rounds ended and its frames are delivered (0) or
    ``--delivery-timeout`` passed with frames undelivered (1)."""
    async def main() -> int:
        return await _serve(NodeHost(args))

    return asyncio.run(main())
