"""``bbjax node serve``: installed partitions as a node on HTTP, persisted in SQLite.

Inbound frames pass the gate (signature, sender, replay); an envelope they complete is
logged in the store's inbox and delivered before the 200 answer (a chunk that completes
none is answered without being kept). Each poll's outbound envelopes become signed frames,
committed with the state (which also drops the inbox rows it took in), then POSTed per peer
in order until the receiver admitted an envelope's last frame; a receiver that lost a
transfer gets it again from its first chunk. A restart resumes from the store: the state,
the inbox delivered again, the unsent frames and the gate's replay counters.
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
from collections.abc import Callable

import httpx
import numpy as np

from bbjax.deploy.backoff import Backoff
from bbjax.deploy.bodies import BodyRefused, read_body
from bbjax.deploy.serving import Listen, uvicorn_server
from bbjax.errors import ConfigError

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


def _refusal(response: httpx.Response) -> str | None:
    """The gate's reason in a refusal's JSON body, if any."""
    try:
        return response.json().get("refused")
    except (ValueError, AttributeError):
        return None


async def send_frames(client: httpx.AsyncClient, url: str, frames: list[bytes],
                      on_failure: Callable[[], None],
                      backoff: Backoff | None = None) -> None:
    """POST one envelope's ``frames`` to ``url`` in order until the last is admitted (200,
    or 409: admitted before a restart of ours). A failed POST calls ``on_failure`` and is
    retried after ``backoff``; a receiver that lost the transfer (``transfer_unknown``: it
    restarted) gets it again from the first chunk."""
    backoff = backoff or Backoff(base=0.05, cap=1.0)
    index = attempt = 0
    while index < len(frames):
        try:
            response = await client.post(url, content=frames[index])
        except httpx.HTTPError:
            response = None
        status = None if response is None else response.status_code
        if status in (200, 409):
            index, attempt = index + 1, 0
        elif status == 400 and _refusal(response) == "transfer_unknown":
            index = 0
        else:
            on_failure()
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1


def _envelopes(outbox: list[tuple[int, int, bytes]]) -> list[tuple[int, list[tuple[int, bytes]]]]:
    """Unsent outbox rows (seq, peer, frame), by seq, grouped per envelope: (peer, frames)."""
    from bbjax.deploy.node.frames import decode_frame

    groups: list[tuple[int, list[tuple[int, bytes]]]] = []
    last: tuple[int, int] | None = None
    for seq, peer, frame in outbox:
        transfer = decode_frame(frame, max_frame_bytes=len(frame)).transfer
        key = (peer, transfer if transfer is not None else -seq)
        if key != last:
            groups.append((peer, []))
            last = key
        groups[-1][1].append((seq, frame))
    return groups


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
        self.logged: list[int] = []  # inbox rows delivered since the state was saved
        for row, envelope in self.store.inbox():
            self.node.deliver(envelope)
            self.logged.append(row)
        self.delivered: list[int] = []  # outbox rows delivered since the last commit
        self.meta = self.store.meta()
        in_round = self.meta["rounds_done"] < self.meta["rounds_started"]  # when it stopped
        self.deadline = time.monotonic() + args.round_timeout if in_round else math.inf
        self.gate = Gate(args.peer, self.peers, max_frame_bytes=args.max_frame_bytes,
                         max_transfer_bytes=cap, last_seq=self.store.last_seq())
        self.refused: Counter = Counter()
        self.admitted = 0
        self.queues: dict[int, asyncio.Queue] = {}
        outbox = self.store.outbox()  # read once: large frames are files
        self.unsent = {seq: peer for seq, peer, _ in outbox}  # seq -> peer
        self.resend = _envelopes(outbox)  # what drive() sends first
        self.rounds_ended = math.inf
        self.exit_code = 0
        self.wake = asyncio.Event()
        self.done = asyncio.Event()

    def persist(self, add=()) -> None:
        """Commit the state, new frames ``add``, the delivered frames and the taken-in inbox."""
        from bbjax.runtime.node_state import state_to_bytes

        self.store.commit(state_to_bytes(self.node.state), add, self.delivered,
                          dict(self.gate.last_seq), self.meta, self.logged)
        self.delivered, self.logged = [], []

    # inbound
    async def envelope(self, request):
        from starlette.responses import JSONResponse

        from bbjax.deploy.node.gate import Refused

        try:
            data = await read_body(request, self.args.max_frame_bytes, 30.0)
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
        if verdict.envelope is not None:  # a chunk that completes none is not kept: the
            self.logged.append(self.store.log_inbound(verdict.envelope,  # gate's persisted
                                                      self.gate.last_seq))  # seq stays before
            self.node.deliver(verdict.envelope)  # its transfer, which the sender resends
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
    def enqueue(self, peer: int, frames: list[tuple[int, bytes]]) -> None:
        """Send the frames (seq, bytes) of one envelope to ``peer``, after those before."""
        if peer not in self.queues:
            self.queues[peer] = asyncio.Queue()
            asyncio.get_running_loop().create_task(self.sender(peer, self.queues[peer]))
        self.queues[peer].put_nowait(frames)

    async def sender(self, peer: int, queue: asyncio.Queue) -> None:
        url = _url(self.peers.by_id(peer).address) + "/envelope"
        async with httpx.AsyncClient(timeout=30.0) as client:
            while True:
                frames = await queue.get()
                await send_frames(client, url, [f for _, f in frames],
                                  lambda: self.node.report_send_failure(peer))
                seqs = [seq for seq, _ in frames]
                self.delivered += seqs
                for seq in seqs:
                    self.unsent.pop(seq, None)
                self.node.report_send_success(peer)
                self.wake.set()


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
        steps = self.node.poll()
        if self.meta["rounds_done"] < self.meta["rounds_started"] and now > self.deadline \
                and not any(isinstance(s, AppOutput) for s in steps):
            for port in self.node.ctx.gather_ports:  # after the poll that decoded what
                self.node.close(port)                 # was delivered up to now
            self.deadline = math.inf
            steps += self.node.poll()
        rows = []
        for s in steps:
            if isinstance(s, Outbound):
                frames = encode_frames(self.identity, s.peer, self.meta["next_seq"], s.data,
                                       max_frame_bytes=args.max_frame_bytes,
                                       timestamp_ns=time.time_ns())
                rows.append((s.peer, [(self.meta["next_seq"] + i, f)
                                      for i, f in enumerate(frames)]))
                self.meta["next_seq"] += len(frames)
        outputs = {s.name: np.asarray(s.value).tolist() for s in steps
                   if isinstance(s, AppOutput)}
        if outputs:
            self.meta["rounds_done"] += 1
            self.deadline = math.inf
        if steps or outputs:
            self.persist(add=[(seq, peer, f) for peer, frames in rows for seq, f in frames])
        if outputs and args.outputs:
            with open(args.outputs, "a") as f:
                f.write(json.dumps({"round": self.meta["rounds_done"], "peer": args.peer,
                                    "outputs": outputs}) + "\n")
        for peer, frames in rows:
            self.unsent.update((seq, peer) for seq, _ in frames)
            self.enqueue(peer, frames)

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
        peers = sorted(set(self.unsent.values()))
        print(f"bbjax: node {args.peer}: {len(self.unsent)} frames to peers {peers} undelivered "
              f"{args.delivery_timeout:g} s after its rounds ended; they stay in {args.state} "
              "and a restart resends them", file=sys.stderr, flush=True)
        self.exit_code = 1
        return True

    async def drive(self) -> None:
        for peer, frames in self.resend:
            self.enqueue(peer, frames)
        self.resend = []
        while not self.finished(time.monotonic()):
            self.step()
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        self.persist()
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
