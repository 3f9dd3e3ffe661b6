"""The PET coordinator behind xaynet's REST API (starlette, served by uvicorn).

One :class:`Coordinator` value sits behind one lock. Each request and each tick is one call
to it; what the call changed (its effects) is written to the store in one transaction
before the answer goes out, so an accepted message is never lost. A store that cannot be
written stops the service: it answers 503 from then on rather than acknowledge what it did
not keep.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bbjax.deploy.bodies import BodyRefused, read_body
from bbjax.deploy.pet import metrics, wire
from bbjax.deploy.pet.config import ServedCoordinator
from bbjax.deploy.pet.store import CoordinatorStore, open_store, restore_coordinator
from bbjax.deploy.serving import uvicorn_server
from bbjax.errors import ConfigError, StoreError
from bbjax.protocols.pet.coordinator import (
    Accepted,
    Buffered,
    Coordinator,
    ModelUnmasked,
    Outcome,
    Rejected,
)

_STATUS = {Accepted: 200, Buffered: 202, Rejected: 400}
_OCTETS = "application/octet-stream"


class CoordinatorService:
    """``coordinator`` persisted to ``store``, its time read from ``clock`` (seconds; it
    must never go backwards); ``model_round`` is the round of its latest global model."""

    def __init__(self, coordinator: Coordinator, store: CoordinatorStore,
                 config: ServedCoordinator, *, model_round: int | None = None,
                 clock: Callable[[], float] | None = None):
        self.coordinator, self.store, self.config = coordinator, store, config
        self.model_round = model_round
        start, origin = coordinator.state.now, time.monotonic()
        self.clock = clock or (lambda: start + time.monotonic() - origin)
        self.refused: collections.Counter[str] = collections.Counter()
        self.broken: str | None = None
        self.lock = asyncio.Lock()

    def _persist(self) -> None:
        effects = self.coordinator.take_effects()
        try:
            self.store.apply(self.coordinator.settings, effects)
        except StoreError as err:
            self.broken = str(err)
            raise
        for e in effects:
            if isinstance(e, ModelUnmasked):
                self.model_round = e.round_id

    async def handle(self, body: bytes) -> Outcome:
        """One message, persisted before it returns."""
        async with self.lock:
            outcome = self.coordinator.handle(body, self.clock())
            self._persist()
            return outcome

    async def tick(self) -> None:
        async with self.lock:
            self.coordinator.tick(self.clock())
            self._persist()

    async def ticking(self) -> None:
        """Tick every ``tick_interval`` seconds until cancelled or the store fails."""
        while self.broken is None:
            with contextlib.suppress(StoreError):
                await self.tick()
            await asyncio.sleep(self.config.tick_interval)


def create_app(service: CoordinatorService) -> Starlette:
    """The REST API of ``service`` (``docs/deploy.md``)."""
    c = service.coordinator

    def unavailable() -> Response | None:
        if service.broken is None:
            return None
        return JSONResponse({"error": "store_failed", "detail": service.broken}, 503)

    async def message(request: Request) -> Response:
        if (down := unavailable()) is not None:
            return down
        try:
            body = await read_body(request, service.config.max_body_bytes,
                                   service.config.body_timeout)
        except BodyRefused as refused:
            service.refused[refused.reason] += 1
            return JSONResponse({"outcome": "refused", "reason": refused.reason,
                                 "detail": refused.detail}, refused.status)
        try:
            outcome = await service.handle(body)
        except StoreError as err:
            return JSONResponse({"error": "store_failed", "detail": str(err)}, 503)
        answer = {"outcome": type(outcome).__name__.lower(), "detail": getattr(outcome, "detail", "")}
        if isinstance(outcome, (Accepted, Buffered)):
            answer["tag"] = outcome.tag.name.lower()
        else:
            answer["reason"] = outcome.reason.value
        return JSONResponse(answer, _STATUS.get(type(outcome), 409))

    async def params(request: Request) -> Response:
        async with service.lock:
            return Response(c.round_params().to_bytes(), media_type=_OCTETS)

    async def sums(request: Request) -> Response:
        async with service.lock:
            found = c.sums()
        return Response(status_code=204) if found is None else Response(
            wire.encode_sums(found), media_type=_OCTETS)

    async def seeds(request: Request) -> Response:
        text = request.query_params.get("pk", "")
        try:
            pk = bytes.fromhex(text)
        except ValueError:
            pk = b""
        if len(pk) != 32:
            service.refused["bad_query"] += 1
            return JSONResponse({"error": "bad_query",
                                 "detail": "pk must be 64 hex digits (a public key)"}, 400)
        async with service.lock:
            found = c.seeds_for(pk)
        return Response(status_code=204) if not found else Response(
            wire.encode_seeds(found), media_type=_OCTETS)

    async def model(request: Request) -> Response:
        async with service.lock:
            found, round_id = c.global_model(), service.model_round
        return Response(status_code=204) if found is None else Response(
            wire.encode_model(round_id or 0, found), media_type=_OCTETS)

    async def metrics_route(request: Request) -> Response:
        async with service.lock:
            text = metrics.render(c, service.refused)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def health(request: Request) -> Response:
        if (down := unavailable()) is not None:
            return down
        return JSONResponse({"round_id": c.round_id, "phase": c.phase.value,
                             "model_round": service.model_round})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(service.ticking())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return Starlette(routes=[Route("/message", message, methods=["POST"]),
                             Route("/params", params), Route("/sums", sums),
                             Route("/seeds", seeds), Route("/model", model),
                             Route("/metrics", metrics_route), Route("/health", health)],
                     lifespan=lifespan)


def open_service(config: ServedCoordinator, *, restore: bool) -> CoordinatorService:
    """The service of ``config``: a fresh coordinator on an empty store, or (``restore``) a
    new round from what the store holds. :class:`ConfigError` for a store that holds a
    coordinator when ``restore`` is false."""
    store = open_store(config.store_url)
    stored = store.load(config.settings)
    if stored is not None and not restore:
        store.close()
        raise ConfigError(f"the store {config.store_url} holds a coordinator (round "
                          f"{stored.round_id}); pass --restore to continue it")
    coordinator = restore_coordinator(store, config.settings, now=0.0)
    return CoordinatorService(coordinator, store, config,
                              model_round=None if stored is None else stored.model_round)


def serve(config: ServedCoordinator, *, restore: bool) -> int:
    """Serve until SIGINT or SIGTERM; the exit status."""
    service = open_service(config, restore=restore)
    listen = config.listen
    print(f"bbjax pet coordinator: round {service.coordinator.round_id} at "
          f"{listen.scheme}://{listen.host}:{listen.port}, store {config.store_url}", flush=True)
    try:
        uvicorn_server(create_app(service), listen).run()
    finally:
        service.store.close()
    return 0
