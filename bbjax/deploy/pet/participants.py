"""PET participants over HTTP (xaynet's test-drive): each a sans-IO :class:`Participant`
driven by an asyncio loop over one shared ``httpx.AsyncClient``.

The loop is :class:`bbjax.protocols.pet.MemoryHost`'s, with the coordinator behind its REST
API: fetch what the participant's phase needs, step it, post what it sends. A transport
error or a 5xx answer is retried after a jittered exponential backoff (the send is reported
failed, so the same chunk goes again); any other answer is definitive. With a state
directory, each participant's ``save()`` bytes are written after every change (atomically),
and a participant that finds its file on start is restored from it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bbjax.deploy.backoff import Backoff
from bbjax.deploy.pet import wire
from bbjax.errors import PetDecodeError, TransportError
from bbjax.protocols.pet.crypto import SigningKeyPair
from bbjax.protocols.pet.participant import Need, Participant, Progress, View
from bbjax.protocols.pet.round_params import RoundParameters
from bbjax.protocols.pet.settings import DEFAULT_MAX_MESSAGE_SIZE, ParticipantSettings

Models = Callable[[str, RoundParameters], np.ndarray]


def identity(seed: int, index: int) -> SigningKeyPair:
    """Participant ``index``'s signing keys under ``seed``."""
    return SigningKeyPair.from_seed(hashlib.sha256(f"bbjax-pet:{seed}:{index}".encode()).digest())


def random_model(name: str, params: RoundParameters) -> np.ndarray:
    """A local model of ``params.model_length`` weights in [-1, 1), fixed by the name and
    the round's seed (what the test-drive contributes)."""
    digest = hashlib.sha256(name.encode() + params.seed).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    return rng.uniform(-1, 1, params.model_length).astype(np.float32)


@dataclasses.dataclass
class Record:
    """What the participants saw: ``updates[round_id]`` the names whose Update was accepted
    in that round; ``answers`` counts HTTP statuses of posts; ``retries`` transport
    failures retried."""

    updates: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    answers: dict[int, int] = dataclasses.field(default_factory=dict)
    retries: int = 0


class Driver:
    """Drives participants against the coordinator at ``url`` through ``client``."""

    def __init__(self, client: httpx.AsyncClient, url: str, models: Models = random_model, *,
                 state_dir: str | Path | None = None, poll: float = 0.05,
                 backoff: Backoff | None = None):
        self.client, self.url, self.models = client, url.rstrip("/"), models
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.poll = poll
        self.backoff = backoff or Backoff(0.05, 2.0, random.Random())
        self.record = Record()

    async def _get(self, path: str) -> bytes | None:
        response = await self.client.get(self.url + path)
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise TransportError(f"GET {path}: HTTP {response.status_code}")
        return response.content

    async def view(self, participant: Participant, name: str) -> View:
        """What the coordinator answers ``participant``'s needs now."""
        needs = participant.needs
        params = RoundParameters.from_bytes(await self._get("/params"))
        sums = seeds = model = None
        if Need.SUMS in needs and (body := await self._get("/sums")) is not None:
            sums = wire.decode_sums(body)
        if Need.SEEDS in needs and (body := await self._get(
                f"/seeds?pk={participant.public_key.hex()}")) is not None:
            seeds = wire.decode_seeds(body)
        if Need.MODEL in needs:
            model = self.models(name, params)
        return View(round_params=params, sums=sums, seeds=seeds, model=model)

    async def _post(self, participant: Participant, name: str) -> bool:
        """Post the outbox; ``False`` for a failure worth retrying."""
        try:
            response = await self.client.post(self.url + "/message", content=participant.outbox)
        except httpx.HTTPError:
            participant.report_sent(False)
            return False
        status = response.status_code
        self.record.answers[status] = self.record.answers.get(status, 0) + 1
        if status >= 500:
            participant.report_sent(False)
            return False
        participant.report_sent(True)
        if status == 200 and response.json().get("tag") == "update":
            health = (await self.client.get(self.url + "/health")).json()
            self.record.updates.setdefault(health["round_id"], []).append(name)
        return True

    def _save(self, participant: Participant, name: str) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / f"{name}.bin"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(participant.save())
        os.replace(tmp, path)

    def participant(self, name: str, keys: SigningKeyPair,
                    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> Participant:
        """``name``'s participant: restored from its saved state if there is one."""
        if self.state_dir is not None:
            path = self.state_dir / f"{name}.bin"
            if path.exists():
                return Participant.restore(path.read_bytes())
        return Participant(ParticipantSettings(keys, 1, max_message_size))

    async def drive(self, participant: Participant, name: str, stop: asyncio.Event) -> None:
        """Step ``participant`` until ``stop`` is set."""
        attempt = 0
        while not stop.is_set():
            try:
                view = await self.view(participant, name)
            except (httpx.HTTPError, TransportError, PetDecodeError):
                self.record.retries += 1
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            progress = participant.step(view)
            if participant.outbox is not None:
                if not await self._post(participant, name):
                    self.record.retries += 1
                    self._save(participant, name)
                    await asyncio.sleep(self.backoff.delay(attempt))
                    attempt += 1
                    continue
            attempt = 0
            if progress is Progress.UPDATED or participant.outbox is not None:
                self._save(participant, name)
            else:
                await asyncio.sleep(self.poll)


async def run_participants(count: int, url: str, *, rounds: int = 1, seed: int = 0,
                           state_dir: str | Path | None = None,
                           max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                           timeout: float = 600.0, verify: str | bool = True,
                           models: Models = random_model,
                           on_round: Callable[[int, Record], None] | None = None) -> Record:
    """Run ``count`` participants until ``rounds`` rounds of the coordinator have ended
    (counted from the round it is in when they start, or from the one saved in
    ``state_dir``); :class:`TransportError` on ``timeout``."""
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
    limits = httpx.Limits(max_connections=min(count, 256))
    async with httpx.AsyncClient(timeout=10.0, limits=limits, verify=verify) as client:
        driver = Driver(client, url, models, state_dir=state_dir)
        first = await _round_now(client, url, timeout)
        target = first + rounds
        if state_dir is not None:
            mark = Path(state_dir) / "target_round"
            if mark.exists():
                target = int(mark.read_text())
            else:
                mark.write_text(str(target))
        stop = asyncio.Event()
        tasks = [asyncio.create_task(driver.drive(
            driver.participant(f"p{i}", identity(seed, i), max_message_size), f"p{i}", stop))
            for i in range(count)]
        deadline, seen = time.monotonic() + timeout, first
        try:
            while True:
                now_round = await _round_now(client, url, deadline - time.monotonic())
                while seen < now_round:
                    if on_round is not None:
                        on_round(seen, driver.record)
                    seen += 1
                if now_round >= target:
                    return driver.record
                if time.monotonic() > deadline:
                    raise TransportError(f"{rounds} rounds did not end within {timeout} s")
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _round_now(client: httpx.AsyncClient, url: str, timeout: float) -> int:
    """The coordinator's round (``GET /health``), retried until ``timeout``."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        try:
            response = await client.get(url.rstrip("/") + "/health")
            if response.status_code == 200:
                return int(response.json()["round_id"])
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise TransportError(f"the coordinator at {url} does not answer GET /health")
        await asyncio.sleep(0.2)


def run_cli(args: argparse.Namespace) -> int:
    """``bbjax pet participants``."""
    def report(round_id: int, record: Record) -> None:
        names = record.updates.get(round_id, [])
        print(f"round {round_id} ended: {len(names)} updates accepted from this process",
              flush=True)

    size = args.max_message_size
    try:
        record = asyncio.run(run_participants(
            args.count, args.url, rounds=args.rounds, seed=args.seed, state_dir=args.state_dir,
            max_message_size=DEFAULT_MAX_MESSAGE_SIZE if size is None else (size or None),
            timeout=args.timeout, verify=args.ca or True, on_round=report))
    except TransportError as err:
        print(f"bbjax pet participants: {err}", flush=True)
        return 1
    print(f"done: answers {dict(sorted(record.answers.items()))}, retries {record.retries}",
          flush=True)
    return 0
