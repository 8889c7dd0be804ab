"""Settings from the environment, validated up front with every problem reported together.

A service declares its settings as a tuple of ``Setting``; ``load`` reads them all and raises
``SettingsError`` listing every problem at once (not the first one only). ``validate_main``
gives each service a ``--validate`` flag that checks the configuration and exits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    env: str
    doc: str
    default: str | None = None  # None = required
    parse: Callable[[str], Any] = str
    secret: bool = False

    @property
    def key(self) -> str:
        """Attribute name: the env name without the ``TALLY_`` prefix, lower case."""
        name = self.env.removeprefix("TALLY_")
        return name.lower()


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


class Settings(dict[str, Any]):
    """Loaded settings; read as attributes (``settings.database_url``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def load(spec: Sequence[Setting], environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values = Settings()
    problems: list[str] = []
    for s in spec:
        raw = env.get(s.env, s.default)
        if raw is None:
            problems.append(f"{s.env}: required ({s.doc})")
            continue
        try:
            values[s.key] = s.parse(raw)
        except (ValueError, TypeError) as exc:
            shown = "***" if s.secret else repr(raw)
            problems.append(f"{s.env}: {shown} is not valid: {exc}")
    if problems:
        raise SettingsError(problems)
    return values


def positive_int(raw: str) -> int:
    v = int(raw)
    if v <= 0:
        raise ValueError("must be > 0")
    return v


def port(raw: str) -> int:
    v = int(raw)
    if not 0 < v < 65536:
        raise ValueError("must be a TCP port (1-65535)")
    return v


def boolean(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def non_empty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw


def describe(spec: Sequence[Setting]) -> str:
    """A table of the settings for READMEs and ``--help``."""
    rows = [f"{s.env:<32} {'(required)' if s.default is None else s.default!s:<28} {s.doc}" for s in spec]
    return "\n".join(rows)


def validate_main(spec: Sequence[Setting], argv: Sequence[str] | None = None) -> Settings | None:
    """Handle ``--validate`` / ``--settings``: returns the settings, or exits for those flags."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--settings" in args:
        print(describe(spec))
        raise SystemExit(0)
    try:
        settings = load(spec)
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
    if "--validate" in args:
        print("configuration OK")
        raise SystemExit(0)
    return settings
