"""Serving a starlette app with uvicorn: address, optional TLS, and bounded connections."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bbjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Tls:
    """TLS from a PEM ``certificate`` chain and its ``key`` (paths)."""

    certificate: str
    key: str

    def __post_init__(self) -> None:
        for field in ("certificate", "key"):
            if not Path(getattr(self, field)).is_file():
                raise ConfigError(f"tls.{field}: no file {getattr(self, field)!r}",
                                  field=f"tls.{field}")


@dataclasses.dataclass(frozen=True)
class Listen:
    """Where a server listens: ``host`` and ``port`` (0: any free port), ``tls`` or plain
    HTTP, at most ``max_connections`` at once (uvicorn answers 503 beyond), idle keep-alive
    connections closed after ``keep_alive`` seconds."""

    host: str = "127.0.0.1"
    port: int = 8081
    tls: Tls | None = None
    max_connections: int = 2048
    keep_alive: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 0 <= self.port < 65536:
            raise ConfigError(f"port: expected 0..65535, got {self.port!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ConfigError(f"max_connections: expected >= 1, got {self.max_connections!r}")

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"


def uvicorn_server(app, listen: Listen):
    """A ``uvicorn.Server`` for ``app`` at ``listen`` (run it with ``server.run()`` or
    ``await server.serve()``); it logs no access lines."""
    import uvicorn

    tls = {} if listen.tls is None else {"ssl_certfile": listen.tls.certificate,
                                         "ssl_keyfile": listen.tls.key}
    config = uvicorn.Config(app, host=listen.host, port=listen.port, access_log=False,
                            log_level="warning", limit_concurrency=listen.max_connections,
                            timeout_keep_alive=listen.keep_alive, lifespan="on", **tls)
    return uvicorn.Server(config)
