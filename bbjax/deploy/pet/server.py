"""The PET coordinator as an HTTP server: xaynet's REST API over a persisted coordinator.

Routes: ``POST /message`` (a sealed PET message or chunk; 200 accepted, 202 buffered, 400
rejected, 409 discarded, 413 / 408 / 400 for a body refused before decryption), ``GET
/params``, ``GET /sums``, ``GET /seeds?pk=HEX``, ``GET /model`` (bodies of
:mod:`bbjax.deploy.pet.wire`), ``GET /metrics`` (:mod:`bbjax.deploy.pet.metrics`) and ``GET
/health``. One lock serializes every coordinator call; the effects of each call are applied
to the store, in one transaction, before the request is answered, and a background task ticks
the coordinator every ``tick_interval`` seconds. A store that fails turns the server to 503
for good: nothing unpersisted is ever acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bbjax.deploy.bodies import BodyRefused, read_body
from bbjax.deploy.pet import wire
from bbjax.deploy.pet.config import ServedCoordinatorConfig
from bbjax.deploy.pet.metrics import CONTENT_TYPE, HttpRefusals, render
from bbjax.deploy.pet.store import CoordinatorStore, open_store, restore_coordinator
from bbjax.deploy.serving import uvicorn_server
from bbjax.errors import ConfigError, StoreError
from bbjax.protocols.pet.coordinator import (
    Accepted,
    Buffered,
    Coordinator,
    Effect,
    ModelUnmasked,
    Rejected,
)
from bbjax.protocols.pet.crypto import PUBLIC_KEY_LENGTH

log = logging.getLogger(__name__)
OCTETS = "application/octet-stream"


class Clock:
    """Coordinator time: ``offset`` plus the seconds since this clock was made, never going
    backwards."""

    def __init__(self, offset: float = 0.0) -> None:
        self._start, self._offset, self._last = time.monotonic(), offset, offset

    def __call__(self) -> float:
        self._last = max(self._last, self._offset + time.monotonic() - self._start)
        return self._last


class ModelRound:
    """The round that unmasked the latest global model (for ``/model``), read off the
    effects (the coordinator's state keeps the model, not its round)."""

    def __init__(self, model_round: int | None = None) -> None:
        self.model_round = model_round

    def apply(self, effects: Sequence[Effect]) -> None:
        for e in effects:
            if isinstance(e, ModelUnmasked):
                self.model_round = e.round_id


def _status(outcome) -> int:
    if isinstance(outcome, Accepted):
        return 200
    if isinstance(outcome, Buffered):
        return 202
    return 400 if isinstance(outcome, Rejected) else 409


def _outcome_body(outcome) -> dict:
    kind = type(outcome).__name__.lower()
    if isinstance(outcome, (Accepted, Buffered)):
        return {"outcome": kind, "tag": outcome.tag.name.lower(), "detail": ""}
    return {"outcome": kind, "reason": outcome.reason.value, "detail": outcome.detail}


def create_app(coordinator: Coordinator, store: CoordinatorStore,
               config: ServedCoordinatorConfig, clock: Callable[[], float] | None = None, *,
               model_round: int | None = None) -> Starlette:
    """The REST app serving ``coordinator``, persisting its effects to ``store``;
    ``clock`` gives coordinator time (default: a :class:`Clock` from the coordinator's own
    time), ``model_round`` the round of its initial global model (a restored store's)."""
    clock = Clock(coordinator.state.now) if clock is None else clock
    settings = config.settings
    lock = asyncio.Lock()
    refusals = HttpRefusals()
    view = ModelRound(model_round)
    failure: list[str] = []

    def persist() -> None:
        """Apply the coordinator's pending effects to the store (under the lock)."""
        effects = coordinator.take_effects()
        coordinator.take_transitions()
        try:
            store.apply(settings, effects)
        except StoreError as err:
            failure.append(str(err))
            log.error("the store failed, no longer serving: %s", err)
            return
        view.apply(effects)

    def unavailable() -> JSONResponse:
        return JSONResponse({"error": "store failed", "detail": failure[0]}, 503)

    async def message(request: Request) -> Response:
        try:
            body = await read_body(request, config.max_body_bytes, config.body_timeout)
        except BodyRefused as refused:
            refusals.record(refused.reason)
            return JSONResponse({"outcome": "refused", "reason": refused.reason,
                                 "detail": refused.detail}, refused.status)
        async with lock:
            if failure:
                return unavailable()
            outcome = coordinator.handle(body, clock())
            persist()
            if failure:
                return unavailable()
        return JSONResponse(_outcome_body(outcome), _status(outcome))

    async def params(request: Request) -> Response:
        async with lock:
            if failure:
                return unavailable()
            return Response(coordinator.round_params().to_bytes(), media_type=OCTETS)

    async def sums(request: Request) -> Response:
        async with lock:
            if failure:
                return unavailable()
            found = coordinator.sums()
        if not found:
            return Response(status_code=204)
        return Response(wire.encode_sums(found), media_type=OCTETS)

    async def seeds(request: Request) -> Response:
        pk = request.query_params.get("pk", "")
        try:
            key = bytes.fromhex(pk)
        except ValueError:
            key = b""
        if len(key) != PUBLIC_KEY_LENGTH or len(pk) != 2 * PUBLIC_KEY_LENGTH:
            refusals.record("bad_query")
            return JSONResponse({"error": "bad_query",
                                 "detail": f"pk must be {2 * PUBLIC_KEY_LENGTH} hex digits"}, 400)
        async with lock:
            if failure:
                return unavailable()
            found = coordinator.seeds_for(key)
        if not found:
            return Response(status_code=204)
        return Response(wire.encode_seeds(found), media_type=OCTETS)

    async def model(request: Request) -> Response:
        async with lock:
            if failure:
                return unavailable()
            found, round_id = coordinator.global_model(), view.model_round
        if found is None or round_id is None:
            return Response(status_code=204)
        return Response(wire.encode_model(round_id, found), media_type=OCTETS)

    async def metrics(request: Request) -> Response:
        async with lock:
            state = coordinator.state
            text = render(coordinator, refusals, masks=len(state.mask_votes),
                          sum_participants=len(state.sum_dict),
                          update_participants=len(state.updaters))
        return Response(text, media_type=CONTENT_TYPE)

    async def health(request: Request) -> Response:
        async with lock:
            if failure:
                return unavailable()
            return JSONResponse({"round_id": coordinator.round_id,
                                 "phase": coordinator.phase.value})

    async def ticker() -> None:
        while not failure:
            await asyncio.sleep(config.tick_interval)
            async with lock:
                if not failure:
                    coordinator.tick(clock())
                    persist()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [Route("/message", message, methods=["POST"]), Route("/params", params),
              Route("/sums", sums), Route("/seeds", seeds), Route("/model", model),
              Route("/metrics", metrics), Route("/health", health)]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(config: ServedCoordinatorConfig, *, restore: bool) -> int:
    """Serve the coordinator of ``config`` until SIGTERM or SIGINT; exit status 0. A
    non-empty store is a :class:`ConfigError` unless ``restore``."""
    store = open_store(config.store_url)
    try:
        stored = store.load(config.settings)
        if stored is not None and not restore:
            raise ConfigError(f"the store {config.store_url} holds round {stored.round_id}: "
                              "pass --restore to continue it, or use an empty store")
        clock = Clock()
        coordinator = restore_coordinator(store, config.settings, clock())
        app = create_app(coordinator, store, config, clock,
                         model_round=None if stored is None else stored.model_round)
        server = uvicorn_server(app, config.listen)
        listen = config.listen
        print(f"bbjax pet coordinator: round {coordinator.round_id} at {listen.scheme}://"
              f"{listen.host}:{listen.port}, store {config.store_url}", flush=True)
        # uvicorn re-raises the signal that stopped it; taken here, it ends the run cleanly
        stopping = {sig: signal.signal(sig, lambda *_: None)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run()
        finally:
            for sig, handler in stopping.items():
                signal.signal(sig, handler)
        return 0
    finally:
        store.close()
