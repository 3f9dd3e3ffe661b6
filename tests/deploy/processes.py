"""Servers and clients as OS processes for the deployment tests, on loopback only.

:func:`free_port` finds a free port on 127.0.0.1; :class:`Process` runs ``python -m bbjax
...`` (the checkout's bbjax, the session's XLA settings), waits until a URL answers, and is
always stopped: terminated, then killed, when the test ends or fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

from tests.forced_devices import ROOT


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    """This process's environment with the checkout first on ``PYTHONPATH``."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), out.get("PYTHONPATH")]))
    out.setdefault("JAX_PLATFORMS", "cpu")
    return out


class Process:
    """``python -m bbjax *args`` (or ``python *argv`` with ``module=False``) with its output
    in ``log`` (a path)."""

    def __init__(self, *args: str, log, module: bool = True):
        self.log = log
        self._out = open(log, "ab")
        command = [sys.executable, "-m", "bbjax", *args] if module else [sys.executable, *args]
        self.proc = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=env(), cwd=str(ROOT))

    def wait_http(self, url: str, timeout: float = 60.0,
                  verify: ssl.SSLContext | bool = True) -> None:
        """Until ``url`` answers 200 (``AssertionError`` with the log if it does not);
        ``verify`` is httpx's (an ``SSLContext`` trusting a test CA for https)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(url, timeout=1.0, verify=verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{url} did not answer within {timeout} s:\n{self.output()}")

    def kill9(self) -> None:
        """``kill -9``: no cleanup in the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        self._out.flush()
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")[-6000:]
