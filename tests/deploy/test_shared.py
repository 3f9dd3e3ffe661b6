"""The deployment pieces every server and client shares: jittered backoff, capped body
reads, listening addresses, TOML files."""

from __future__ import annotations

import asyncio
import random

import pytest
from starlette.requests import Request

from bbjax.deploy.backoff import Backoff
from bbjax.deploy.bodies import BodyRefused, read_body
from bbjax.deploy.serving import Listen, Tls
from bbjax.deploy.toml_files import read_toml
from bbjax.errors import ConfigError, InvalidArgument


def test_backoff_doubles_to_its_cap_and_draws_full_jitter():
    backoff = Backoff(0.1, 1.0, random.Random(7))
    assert [backoff.ceiling(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    draws = [backoff.delay(3) for _ in range(2000)]
    assert 0 <= min(draws) and max(draws) <= 0.8
    assert abs(sum(draws) / len(draws) - 0.4) < 0.03     # uniform on [0, 0.8]: mean 0.4
    assert Backoff(0.1, 1.0, random.Random(7)).delay(3) == Backoff(0.1, 1.0, random.Random(7)).delay(3)


@pytest.mark.parametrize("kwargs", [{"base": 0}, {"base": 2.0, "cap": 1.0}])
def test_backoff_refuses_bad_bounds(kwargs):
    with pytest.raises(InvalidArgument):
        Backoff(**kwargs)


def _request(chunks, *, length=None, stall=False):
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]

    async def receive():
        if messages:
            return messages.pop(0)
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": b"", "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def _read(request, max_bytes=10, timeout=1.0):
    return asyncio.run(read_body(request, max_bytes, timeout))


def test_a_body_within_the_cap_is_read_whole():
    assert _read(_request([b"abc", b"defg"], length=7)) == b"abcdefg"


@pytest.mark.parametrize("chunks, length, status, reason", [
    ([b"x" * 11], None, 413, "oversized"),                   # streamed past the cap
    ([b"x"], 11, 413, "oversized"),                          # declared past the cap
    ([b"x"], "-1", 400, "bad_length"),
])
def test_bodies_over_the_cap_or_with_bad_lengths_are_refused(chunks, length, status, reason):
    with pytest.raises(BodyRefused) as info:
        _read(_request(chunks, length=length))
    assert (info.value.status, info.value.reason) == (status, reason)


def test_a_body_that_stops_arriving_is_refused_at_the_deadline():
    with pytest.raises(BodyRefused) as info:
        _read(_request([b"abc"], stall=True), timeout=0.2)
    assert (info.value.status, info.value.reason) == (408, "body_timeout")


def test_listen_and_tls_check_their_fields(tmp_path):
    assert Listen(port=0).scheme == "http"
    with pytest.raises(ConfigError, match="port"):
        Listen(port=70000)
    with pytest.raises(ConfigError, match="tls.certificate"):
        Tls(str(tmp_path / "missing.pem"), str(tmp_path / "key.pem"))


def test_read_toml_names_the_file_and_what_is_wrong(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('a = 1\n[b]\nc = "d"\n')
    assert read_toml(good, "peer list") == {"a": 1, "b": {"c": "d"}}
    with pytest.raises(ConfigError, match=r"^no peer list '.*missing.toml'$"):
        read_toml(tmp_path / "missing.toml", "peer list")
    with pytest.raises(ConfigError, match=r"^cannot read peer list '.*': Is a directory$"):
        read_toml(tmp_path, "peer list")
    bad = tmp_path / "bad.toml"
    bad.write_text('secret = "abc\n')
    with pytest.raises(ConfigError, match=r"^config file '.*bad.toml' is not valid TOML: .+"):
        read_toml(bad, "config file")
    with pytest.raises(ConfigError, match=r"^key file '.*bad.toml' is not valid TOML$"):
        read_toml(bad, "key file", parser_detail=False)
    bad.write_bytes(b"a = '\xff'\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_toml(bad, "config file")
