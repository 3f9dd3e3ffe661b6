"""A throwaway ``redis-server`` on 127.0.0.1 for the Redis store tests.

:class:`RedisServer` starts it on a free port in a directory of its own (no RDB snapshots;
append-only only when asked), waits until it answers PING and is stopped by :meth:`stop`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import redis

from tests.deploy.processes import free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """``redis-server`` in ``directory`` on a free port; ``appendonly`` turns on the
    append-only file with ``fsync`` at every write."""

    def __init__(self, directory, *, appendonly: bool = False, port: int | None = None):
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.directory = directory
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if appendonly
                       else ["--appendonly", "no"])
        self._log = open(directory / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(directory), *persistence],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(directory))
        self._wait_ping()

    def _wait_ping(self, timeout: float = 10.0) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
        finally:
            client.close()

    def kill9(self) -> None:
        """``kill -9`` the server."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
