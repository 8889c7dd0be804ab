"""Settings from the environment: typed, validated up front, every problem reported together.

A service declares its settings as a frozen dataclass whose fields are ``setting(env, doc,
default, parse)`` and wraps it in a ``Spec``; ``load(SPEC)`` reads them all and returns an
instance of that dataclass, or raises ``SettingsError`` listing every problem at once (not the
first one only). A field's name is its env name without ``TALLY_``, lower case
(``TALLY_KAFKA_BOOTSTRAP`` → ``settings.kafka_bootstrap``), and mypy checks each read: a
misspelt setting, or a parser whose result is not the field's type, is a type error. A group of
settings several services share (``KafkaSettings``, ``tally_streams.security.KafkaSecurity``) is
a frozen dataclass of its own that a service's settings inherit; a group may define
``problems()`` for checks across its settings (a SASL protocol needs a password), which ``load``
reports once every setting has parsed. ``validate_main`` gives each service its ``--validate``
(check the configuration and exit) and ``--settings`` (list every setting with its default) flags.

Why a small dataclass loader rather than pydantic-settings: each setting's env name, doc,
default (as the string the environment would hold), parser and secrecy sit on one line that
``--settings`` and the problem list print as they are, which pydantic-settings would spread over
aliases, validators and error translation. It is about a hundred lines of standard library and
keeps the problem messages and the ``--settings`` table the services already document.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

_SETTING = "tally_setting"


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, what it means, its default (None = required)."""

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


@overload
def setting(env: str, doc: str, default: str | None = None, *, secret: bool = False) -> str: ...


@overload
def setting(env: str, doc: str, default: str | None, parse: Callable[[str], T], *, secret: bool = False) -> T: ...


def setting(env: str, doc: str, default: str | None = None, parse: Callable[[str], Any] = str, *,
            secret: bool = False) -> Any:
    """A field of a settings dataclass. Typed as the parser's result so mypy checks the field's annotation
    against it; at run time it is a ``dataclasses.field`` carrying the ``Setting`` (a secret stays out of ``repr``)."""
    return dataclasses.field(metadata={_SETTING: Setting(env, doc, default, parse, secret)}, repr=not secret)


class Spec(Generic[T]):
    """The settings of one service: the dataclass ``load`` builds, and its ``Setting`` s in declaration order
    (inherited groups first). Iterating a spec yields the ``Setting`` s."""

    def __init__(self, cls: type[T]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        found: list[Setting] = []
        for f in dataclasses.fields(cls):
            s = f.metadata.get(_SETTING)
            if not isinstance(s, Setting):
                raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting(...)")
            if f.name != s.key:
                raise TypeError(f"{cls.__name__}.{f.name} must be named {s.key} after {s.env}")
            found.append(s)
        self.cls = cls
        self.settings: tuple[Setting, ...] = tuple(found)

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.settings)


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


def load(spec: Spec[T], environ: Mapping[str, str] | None = None) -> T:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
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
    settings = spec.cls(**values)
    across = getattr(settings, "problems", None)  # a group's checks across its settings, once each one parsed
    if callable(across) and (problems := list(across())):
        raise SettingsError(problems)
    return settings


N = TypeVar("N", int, float)


def _checked(number: Callable[[str], N], ok: Callable[[N], bool], rule: str) -> Callable[[str], N]:
    """A parser of a number that must keep ``rule``."""
    def parse(raw: str) -> N:
        v = number(raw)
        if not ok(v):
            raise ValueError(rule)
        return v
    return parse


positive_int = _checked(int, lambda v: v > 0, "must be > 0")
non_negative_int = _checked(int, lambda v: v >= 0, "must be ≥ 0")
positive_float = _checked(float, lambda v: v > 0, "must be > 0")
port = _checked(int, lambda v: 0 < v < 65536, "must be a TCP port (1-65535)")


def int_between(low: int, high: int) -> Callable[[str], int]:
    """A parser of an integer from ``low`` to ``high``, both included."""
    return _checked(int, lambda v: low <= v <= high, f"must be {low}-{high}")


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


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """The Kafka settings every service that talks to the broker includes (by inheriting this group)."""

    kafka_bootstrap: str = setting("TALLY_KAFKA_BOOTSTRAP", "Kafka bootstrap servers", "127.0.0.1:9092", non_empty)


def describe(spec: Spec[Any]) -> str:
    """A table of the settings for READMEs and ``--settings``."""
    rows = [f"{s.env:<32} {'(required)' if s.default is None else s.default!s:<28} {s.doc}" for s in spec]
    return "\n".join(rows)


def validate_main(spec: Spec[T], argv: Sequence[str] | None = None) -> T:
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
