"""The effective configuration written back as the config file takes it (``relay check-config``).

Every section of :class:`relay.config.Config`, with durations as ``"30s"``,
sizes as ``"25MB"``, addresses as ``"host:port"``, networks and rates as
strings, and secrets masked: the TOML pasted into a file loads to the same
settings (the masked secrets aside).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from relay.config import Config, Rate, masked_url, parse_size

MASK = "********"
SECRET_KEYS = frozenset({"password"})

_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
_SIZE_UNITS = (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024))
_RATE_PERIODS = {1.0: "s", 60.0: "m", 3600.0: "h", 86400.0: "d"}


def duration_text(seconds: float) -> str:
    """``1800.0`` → ``"30m"``: the largest unit that writes it exactly."""
    millis = round(seconds * 1000)
    if millis == 0 or abs(millis - seconds * 1000) > 1e-6:
        return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"
    return next(f"{millis // size}{unit}" for unit, size in _DURATION_UNITS if millis % size == 0)


def size_text(size: int) -> str:
    """``26214400`` → ``"25MB"`` (binary units, as the loader reads them)."""
    for unit, factor in _SIZE_UNITS:
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def rate_text(rate: Rate) -> str:
    """``Rate(3600, 3600.0)`` → ``"3600/h"``."""
    return f"{rate.limit}/{_RATE_PERIODS[rate.period]}"


def hostport_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def as_written(config: Config) -> dict[str, dict[str, Any]]:
    """Every section, in the file's form, secrets masked."""
    return {f.name: _section(getattr(config, f.name)) for f in dataclasses.fields(config) if f.name != "source"}


@dataclasses.dataclass(frozen=True)
class Effective:
    """The settings in force as ``relay check-config`` shows them (and the dashboard's Settings page):
    every section as written, secrets masked, and the settings that resolve at start-up ("auto")."""

    sections: dict[str, dict[str, Any]]
    resolved: dict[tuple[str, str], Any]

    @property
    def notes(self) -> dict[tuple[str, str], str]:
        return {key: f"resolves to {value} here" for key, value in self.resolved.items()}

    def data(self) -> dict[str, Any]:
        """For --json: the sections, and ``resolved`` as ``{"server.acceptors": N, "dkim.sign_at": "..."}``."""
        return {**self.sections, "resolved": {f"{s}.{k}": v for (s, k), v in self.resolved.items()}}

    def toml(self) -> str:
        return to_toml(self.sections, self.notes)


def effective(config: Config) -> Effective:
    resolved = {("server", "acceptors"): config.server.acceptor_processes, ("dkim", "sign_at"): config.dkim_signs_at}
    return Effective(as_written(config), resolved)


def value_text(value: Any) -> str:
    """One value of :func:`as_written` as TOML writes it."""
    return _toml_value(value)


def _section(section: Any) -> dict[str, Any]:
    out = {}
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        if field.metadata.get("parse") is parse_size:
            out[field.name] = size_text(value)
        else:
            out[field.name] = _written(field.name, value)
    return out


def _written(key: str, value: Any) -> Any:
    """One value in the form the loader takes back (``key`` decides masking)."""
    if key in SECRET_KEYS and value:
        return MASK
    if key == "url" and isinstance(value, str):  # [store] url: the database password
        return masked_url(value)
    if value is None:  # an optional setting left empty: smarthost, max_rate
        return ""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return duration_text(value)
    if isinstance(value, Rate):
        return rate_text(value)
    if isinstance(value, Path | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return hostport_text(value)
    if isinstance(value, list | tuple):
        return [_written(key, v) for v in value]
    if isinstance(value, dict):
        return {k: _written(k, v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):  # a route, a DKIM key: a table of its fields, unset ones left out
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {k: _written(k, v) for k, v in fields.items() if v is not None}
    raise TypeError(f"no TOML form for {key} = {value!r}")


# ---------------------------------------------------------------------------
# TOML text

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _is_table_of_tables(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def to_toml(sections: dict[str, dict[str, Any]], comments: dict[tuple[str, str], str] | None = None) -> str:
    """Sections as TOML: plain keys first, then tables of tables (``[delivery.routes."x"]``) as sub-tables.

    ``comments`` puts ``# text`` after a key's line, e.g. what a setting resolves to.
    """
    comments = comments or {}
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{_key(name)}]")
        for key, value in values.items():
            if not _is_table_of_tables(value):
                note = comments.get((name, key))
                lines.append(f"{_key(key)} = {_toml_value(value)}" + (f"  # {note}" if note else ""))
        for key, value in values.items():
            if _is_table_of_tables(value):
                for sub, table in value.items():
                    lines.append(f"[{_key(name)}.{_key(key)}.{json.dumps(sub)}]")
                    lines.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in table.items())
        lines.append("")
    return "\n".join(lines)
