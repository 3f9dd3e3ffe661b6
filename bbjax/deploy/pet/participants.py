"""PET participants over HTTP: the network version of :class:`~bbjax.protocols.pet.host.MemoryHost`.

:func:`drive` runs one :class:`Participant` against a coordinator's REST API (``docs/deploy.md``):
it fetches what :attr:`Participant.needs` asks, steps, posts the outbox, and saves the state
after every change so that a restarted process continues. :func:`run_participants` runs
``count`` of them on one shared :class:`httpx.AsyncClient` until some rounds have ended;
:func:`run_cli` is ``bbjax pet participants``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np

from bbjax.deploy.backoff import Backoff
from bbjax.deploy.pet.wire import decode_seeds, decode_sums
from bbjax.errors import ConfigError, PetDecodeError, TransportError
from bbjax.protocols.pet.crypto import SigningKeyPair
from bbjax.protocols.pet.participant import Need, Participant, ParticipantPhase, Progress, View
from bbjax.protocols.pet.round_params import RoundParameters
from bbjax.protocols.pet.settings import ParticipantSettings

Models = Callable[[str, RoundParameters], np.ndarray | None]
Answer = Callable[[str, ParticipantPhase, bytes, int], None]

POLL_S = 0.05
CONNECT_S = 10.0


def identity(seed: int, i: int) -> SigningKeyPair:
    """Participant ``i``'s signing keys: seed ``sha256(f"{seed}:{i}")``."""
    return SigningKeyPair.from_seed(hashlib.sha256(f"{seed}:{i}".encode()).digest())


def local_model(name: str, params: RoundParameters) -> np.ndarray:
    """``name``'s model for the round of ``params``: uniform in [-1, 1), float32, drawn from
    ``sha256(name || round seed)``."""
    rng = np.random.default_rng(list(hashlib.sha256(name.encode() + params.seed).digest()))
    return rng.uniform(-1.0, 1.0, params.model_length).astype(np.float32)


def _save(participant: Participant, path: Path | None) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(participant.save())
    os.replace(tmp, path)


async def _get(client: httpx.AsyncClient, url: str, **params: str) -> bytes | None:
    """The body of a 200 answer, ``None`` for 204; :class:`httpx.HTTPError` otherwise."""
    response = await client.get(url, params=params or None)
    if response.status_code == 204:
        return None
    response.raise_for_status()
    return response.content


async def _view(participant: Participant, client: httpx.AsyncClient, url: str,
                models: Models, name: str) -> View:
    raw = await _get(client, f"{url}/params")
    params = None if raw is None else RoundParameters.from_bytes(raw)
    needs = participant.needs
    if params is None or params != participant.state.round_params:
        return View(round_params=params)
    sums = seeds = model = None
    if Need.SUMS in needs:
        raw = await _get(client, f"{url}/sums")
        sums = None if raw is None else decode_sums(raw)
    if Need.SEEDS in needs:
        raw = await _get(client, f"{url}/seeds", pk=participant.public_key.hex())
        seeds = None if raw is None else decode_seeds(raw)
    if Need.MODEL in needs:
        model = models(name, params)
    return View(round_params=params, sums=sums, seeds=seeds, model=model)


async def drive(participant: Participant, client: httpx.AsyncClient, url: str, models: Models,
                *, name: str, state_path: Path | None = None, backoff: Backoff,
                stop: asyncio.Event, on_answer: Answer | None = None) -> None:
    """Run ``participant`` (called ``name``) against the coordinator at ``url`` until ``stop``
    is set. Transport errors, 5xx answers and malformed bodies are retried after ``backoff``; any other answer to
    a post is definitive. ``on_answer(name, sending_phase, round_seed, status)`` sees every answer to a
    post; the state is written to ``state_path`` (atomically) after every change."""
    attempt = 0
    while not stop.is_set():
        try:
            progress = participant.step(await _view(participant, client, url, models, name))
            if progress is Progress.UPDATED:
                _save(participant, state_path)
            data = participant.outbox
            if data is not None:
                phase, seed = participant.phase, participant.state.round_params.seed
                try:
                    response = await client.post(f"{url}/message", content=data)
                except httpx.HTTPError:
                    participant.report_sent(False)
                    raise
                if response.status_code >= 500:
                    participant.report_sent(False)
                    raise httpx.HTTPStatusError("server error", request=response.request,
                                                response=response)
                participant.report_sent(True)
                _save(participant, state_path)
                if on_answer is not None:
                    on_answer(name, phase, seed, response.status_code)
            attempt = 0
            if progress is not Progress.UPDATED and data is None:
                await asyncio.sleep(POLL_S)
        except (httpx.HTTPError, PetDecodeError):
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1


@dataclasses.dataclass
class RoundRecord:
    """What the participants saw of round ``round_id`` (of round seed ``seed``, ``None`` if
    no participant posted in it): who had an Update (``updates``) or a Sum / Sum2 (``sums``,
    ``sum2s``) accepted (answered 200), and every answer's status."""

    round_id: int
    seed: bytes | None = None
    updates: set[str] = dataclasses.field(default_factory=set)
    sums: set[str] = dataclasses.field(default_factory=set)
    sum2s: set[str] = dataclasses.field(default_factory=set)
    statuses: list[int] = dataclasses.field(default_factory=list)


async def _health(client: httpx.AsyncClient, url: str) -> int:
    response = await client.get(f"{url}/health")
    response.raise_for_status()
    return int(response.json()["round_id"])


async def _connect(client: httpx.AsyncClient, url: str, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        try:
            return await _health(client, url)
        except (httpx.HTTPError, ValueError, KeyError) as err:
            if time.monotonic() >= deadline:
                raise TransportError(f"no PET coordinator answers GET {url}/health within "
                                     f"{within:g} s ({type(err).__name__}: {err})") from None
            await asyncio.sleep(0.1)


def _participant(i: int, seed: int, state_dir: Path | None,
                 max_message_size: int | None) -> tuple[Participant, Path | None]:
    path = None if state_dir is None else state_dir / f"p{i}.state"
    if path is not None and path.exists():
        return Participant.restore(path.read_bytes()), path
    return Participant(ParticipantSettings(identity(seed, i), 1, max_message_size)), path


def _trust(verify: str | bool | ssl.SSLContext) -> bool | ssl.SSLContext:
    """httpx's ``verify`` for ``verify``: a string is a CA certificate file to trust."""
    if not isinstance(verify, str):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"CA certificate {verify!r}: {err}", field="ca") from None


async def run_participants(url: str, count: int, *, rounds: int = 1, seed: int = 0,
                           indices: Sequence[int] | None = None,
                           state_dir: str | Path | None = None,
                           max_message_size: int | None = None, timeout: float = 600.0,
                           models: Models = local_model,
                           verify: str | bool | ssl.SSLContext = True,
                           on_round: Callable[[RoundRecord], None] | None = None,
                           ) -> list[RoundRecord]:
    """Run participants ``p0 .. p{count-1}`` (or ``p{i}`` for ``i`` in ``indices``) against
    ``url`` until ``rounds`` coordinator rounds have ended (its round id advanced that often);
    the records of the ended rounds.
    :class:`TransportError` if ``url`` never answers; :class:`TimeoutError` after
    ``timeout`` seconds. ``state_dir`` holds each participant's state: one found there is
    restored."""
    url = url.rstrip("/")
    state = None if state_dir is None else Path(state_dir)
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
    limits = httpx.Limits(max_connections=max(10, min(count, 200)))
    trust = _trust(verify)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, verify=trust) as client:
        first = await _connect(client, url, min(timeout, CONNECT_S))
        by_seed: dict[bytes, int] = {}
        records: dict[bytes, RoundRecord] = {}

        def on_answer(name: str, phase: ParticipantPhase, round_seed: bytes,
                      status: int) -> None:
            record = records.setdefault(round_seed, RoundRecord(-1, round_seed))
            record.statuses.append(status)
            if status == 200:
                {ParticipantPhase.SENDING_SUM: record.sums,
                 ParticipantPhase.SENDING_UPDATE: record.updates,
                 ParticipantPhase.SENDING_SUM2: record.sum2s}[phase].add(name)

        stop = asyncio.Event()
        tasks = []
        for i in range(count) if indices is None else indices:
            participant, path = _participant(i, seed, state, max_message_size)
            tasks.append(asyncio.create_task(drive(
                participant, client, url, models, name=f"p{i}", state_path=path,
                backoff=Backoff(base=0.05, cap=1.0), stop=stop, on_answer=on_answer)))
        done: list[RoundRecord] = []
        deadline = time.monotonic() + timeout
        try:
            current = first
            while len(done) < rounds:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{len(done)} of {rounds} rounds ended within "
                                       f"{timeout:g} s")
                try:
                    before = await _health(client, url)
                    raw = await _get(client, f"{url}/params")
                    if raw is not None and await _health(client, url) == before:
                        by_seed.setdefault(RoundParameters.from_bytes(raw).seed, before)
                except (httpx.HTTPError, ValueError, KeyError):
                    await asyncio.sleep(0.1)
                    continue
                for rid in range(current, before):
                    seed_of = next((s for s, r in by_seed.items() if r == rid), None)
                    record = records.get(seed_of, RoundRecord(rid, seed_of))
                    record.round_id = rid
                    done.append(record)
                    if on_round is not None:
                        on_round(record)
                current = max(current, before)
                await asyncio.sleep(POLL_S)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        return done[:rounds]


def run_cli(args: argparse.Namespace) -> int:
    """``bbjax pet participants``: one line per ended round; 0, or 1 on ``--timeout``."""
    def show(record: RoundRecord) -> None:
        print(f"round {record.round_id}: {len(record.sums)} sums, {len(record.updates)} "
              f"updates, {len(record.sum2s)} sum2s accepted", flush=True)

    try:
        asyncio.run(run_participants(
            args.url, args.count, rounds=args.rounds, seed=args.seed, state_dir=args.state_dir,
            max_message_size=args.max_message_size, timeout=args.timeout,
            verify=args.ca or True, on_round=show))
    except TimeoutError as err:
        print(f"timeout: {err}", flush=True)
        return 1
    return 0
