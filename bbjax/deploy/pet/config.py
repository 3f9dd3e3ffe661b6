"""The served coordinator's TOML file (``bbjax pet coordinator --config pet.toml``).

Sections: ``[pet.sum]`` / ``[pet.update]`` (``prob, count_min, count_max, time_min,
time_max``), ``[pet.sum2]`` (the same without ``prob``), ``[mask]`` (``group_type,
data_type, bound_type, model_type``), ``[model] length``, ``[server] host, port,
max_body_bytes, body_timeout, tick_interval``, ``[tls] certificate, key`` (optional) and
``[store] url``. Every bad or unknown entry is a :class:`ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from bbjax.deploy.serving import Listen, Tls
from bbjax.deploy.toml_files import read_toml
from bbjax.errors import ConfigError
from bbjax.protocols.pet.settings import CoordinatorSettings

DEFAULT_STORE_URL = "sqlite:///bbjax-pet.db"
DEFAULT_MAX_BODY_BYTES = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class ServedCoordinatorConfig:
    """A served coordinator: its protocol ``settings``, where it listens, the cap and
    deadline of a request body, how often it ticks (seconds) and its store's URL."""

    settings: CoordinatorSettings
    listen: Listen
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout: float = 10.0
    tick_interval: float = 0.1
    store_url: str = DEFAULT_STORE_URL


_PHASE_KEYS = {"prob", "count_min", "count_max", "time_min", "time_max"}
_SECTIONS = {"pet", "mask", "model", "server", "tls", "store"}


def load_config(path: str | Path, *, port: int | None = None,
                store: str | None = None) -> ServedCoordinatorConfig:
    """The configuration in the TOML file ``path``; ``port`` and ``store`` (a URL) replace
    the file's. :class:`ConfigError` naming the field for any bad entry."""
    data = read_toml(path, "config file")
    _known(data, _SECTIONS, "")
    settings = CoordinatorSettings.from_dict(_settings_dict(data))
    server = _table(data, "server")
    _known(server, {"host", "port", "max_body_bytes", "body_timeout", "tick_interval"},
           "server.")
    host = server.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"server.host must be a host name, got {host!r}", field="server.host")
    tls = _tls(data)
    chosen_port = server.get("port", 8081) if port is None else port
    try:
        listen = Listen(host=host, port=chosen_port, tls=tls)
    except ConfigError as err:
        raise ConfigError(f"server.{err}", field="server.port") from None
    max_body = server.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise ConfigError(f"server.max_body_bytes must be a positive integer, got "
                          f"{max_body!r}", field="server.max_body_bytes")
    store_table = _table(data, "store")
    _known(store_table, {"url"}, "store.")
    url = store_table.get("url", DEFAULT_STORE_URL) if store is None else store
    if not isinstance(url, str) or not url:
        raise ConfigError(f"store.url must be a URL, got {url!r}", field="store.url")
    return ServedCoordinatorConfig(
        settings, listen, max_body,
        _seconds(server.get("body_timeout", 10.0), "server.body_timeout"),
        _seconds(server.get("tick_interval", 0.1), "server.tick_interval"), url)


def _settings_dict(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pet = _table(data, "pet")
    _known(pet, {"sum", "update", "sum2"}, "pet.")
    for name in ("sum", "update", "sum2"):
        if name not in pet:
            continue
        phase = _table(pet, name, f"pet.{name}")
        keys = _PHASE_KEYS - ({"prob"} if name == "sum2" else set())
        _known(phase, keys, f"pet.{name}.")
        entry: dict[str, Any] = {}
        for part in ("count", "time"):
            bounds = {b: phase[f"{part}_{b}"] for b in ("min", "max") if f"{part}_{b}" in phase}
            if bounds:
                entry[part] = bounds
        if "prob" in phase:
            entry["prob"] = phase["prob"]
        out[name] = entry
    if "mask" in data:
        mask = _table(data, "mask")
        _known(mask, {"group_type", "data_type", "bound_type", "model_type"}, "mask.")
        out["mask"] = mask
    model = _table(data, "model")
    _known(model, {"length"}, "model.")
    if "length" in model:
        out["model_length"] = model["length"]
    return out


def _tls(data: dict[str, Any]) -> Tls | None:
    if "tls" not in data:
        return None
    tls = _table(data, "tls")
    _known(tls, {"certificate", "key"}, "tls.")
    for field in ("certificate", "key"):
        if not isinstance(tls.get(field), str):
            raise ConfigError(f"tls.{field} must be a path", field=f"tls.{field}")
    return Tls(tls["certificate"], tls["key"])


def _table(data: dict[str, Any], key: str, name: str | None = None) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name or key} must be a table", field=name or key)
    return value


def _known(data: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown setting {prefix}{unknown[0]}", field=prefix + unknown[0])


def _seconds(value: Any, field: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ConfigError(f"{field} must be positive finite seconds, got {value!r}", field=field)
    return float(value)
