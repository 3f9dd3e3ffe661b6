"""Reading the deployment's TOML files (configs, peer lists, key files) with bbjax errors."""

from __future__ import annotations

import os
import tomllib
from typing import Any

from bbjax.errors import ConfigError


def read_toml(path: str | os.PathLike[str], what: str, *,
              parser_detail: bool = True) -> dict[str, Any]:
    """The table in the TOML file ``path``; :class:`ConfigError` naming ``what`` (e.g.
    ``"peer list"``) and the path for a file that is missing, unreadable or not TOML.
    ``parser_detail=False`` leaves the parser's message out (a file holding a secret)."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no {what} {name!r}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {name!r}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        detail = f": {exc}" if parser_detail else ""
        raise ConfigError(f"{what} {name!r} is not valid TOML{detail}") from None
