"""The processor's state: a key → JSON-able value map, changelogged key by key.

Everything the decider must remember lives here, under a one-letter prefix:

``x:<household>``                 exposure index: ``[[impression_id, event_time_us, advertiser_id, campaign_id, partner_id], ...]``
``h:<household>``                 the household's attributed conversions: ``[[contract_id, event_type, event_time_us], ...]``
``c:<conversion_id>``             every decided conversion id (dedupe; attributed ones keep what a reversal needs)
``o:<advertiser>\\x1f<order_id>``  order ids already counted per advertiser → conversion id
``u:<contract>\\x1f<period>``      contract usage in a period ``[conversions, amount]``
``p:<contract>\\x1f<partner>\\x1f<period>``     partner usage in a period ``[conversions, amount]``
``e:<contract>\\x1f<period>\\x1f<event_type>``  conversions of an event type in a period (tiers)
``q:<topic>/<partition>/<offset>``  conversions waiting for their settle delay

In memory an ``x:`` value is one flat tuple per household (``EXPOSURE_WIDTH`` fields per
exposure, sorted by (event time, impression id)) whose advertiser, campaign and partner ids are
interned: one tuple and one impression-id string per exposure instead of a list and five
objects (``get`` still answers the list-of-lists form). A pending conversion keeps its raw bytes;
the changelog carries them base64-encoded.

Each change marks its key dirty; the processor writes the dirty keys (or tombstones) to the
compacted changelog topic inside the same Kafka transaction as the outputs and the input
offsets, so state, outputs and positions move together or not at all. A key changed several
times in one transaction is written once, with its last value; a pending conversion that is
queued and decided within one transaction is never written at all (nothing to tombstone).
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

SEP = "\x1f"
#: fields per exposure in an ``x:`` value: impression_id, event_time_us, advertiser_id, campaign_id, partner_id
EXPOSURE_WIDTH = 5

#: one household's exposures, flat: (impression_id, event_time_us, advertiser_id, campaign_id, partner_id, ...)
Exposures = tuple[Any, ...]


def exposure_rows(flat: Exposures) -> list[tuple[Any, ...]]:
    """``flat`` as one tuple per exposure."""
    return [flat[i:i + EXPOSURE_WIDTH] for i in range(0, len(flat), EXPOSURE_WIDTH)]


def flat_exposures(rows: Sequence[Sequence[Any]]) -> Exposures:
    """Rows (lists from JSON, or tuples) as one flat tuple, with the shared ids interned."""
    intern = sys.intern
    out: list[Any] = []
    for r in rows:
        iid, t, adv, campaign, partner = r
        out += (iid, int(t), intern(adv), intern(campaign), None if partner is None else intern(partner))
    return tuple(out)


class AttributionState:
    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}
        #: pending conversions live apart so the settle gate can scan them cheaply
        self.pending: dict[str, dict[str, Any]] = {}
        #: keys changed since the last drain, in the order of their first change
        self.dirty: dict[str, None] = {}
        #: pending keys queued since the last drain (never written: dropping one needs no tombstone)
        self._fresh_pending: set[str] = set()
        self.exposure_count = 0
        self.household_count = 0

    # ---------------------------------------------------------------- generic access

    def get(self, key: str) -> Any:
        value = self.kv.get(key)
        if value is not None and key.startswith("x:"):
            return [list(r) for r in exposure_rows(value)]
        return value

    def put(self, key: str, value: Any) -> None:
        if key.startswith("x:"):
            self.put_exposures(key, flat_exposures(value))
            return
        self.kv[key] = value
        self.dirty[key] = None

    def delete(self, key: str) -> None:
        if key in self.kv:
            if key.startswith("x:"):
                self.exposure_count -= len(self.kv[key]) // EXPOSURE_WIDTH
                self.household_count -= 1
            del self.kv[key]
            self.dirty[key] = None

    # ---------------------------------------------------------------- exposure index

    def exposures(self, key: str) -> Exposures:
        """The flat exposures under ``key`` (``x:<household>``); empty when none."""
        return self.kv.get(key) or ()

    def put_exposures(self, key: str, flat: Exposures) -> None:
        old = self.kv.get(key)
        if old is None:
            self.household_count += 1
            self.exposure_count += len(flat) // EXPOSURE_WIDTH
        else:
            self.exposure_count += (len(flat) - len(old)) // EXPOSURE_WIDTH
        self.kv[key] = flat
        self.dirty[key] = None

    # ---------------------------------------------------------------- settle delay

    def put_pending(self, key: str, value: dict[str, Any]) -> None:
        """``value``: ``raw`` (bytes), ``arr`` (arrival ms), ``topic``, ``p``, ``o``, ``key`` (bytes or None)."""
        self.pending[key] = value
        self.dirty[key] = None
        self._fresh_pending.add(key)

    def drop_pending(self, key: str) -> None:
        if self.pending.pop(key, None) is None:
            return
        if key in self._fresh_pending:  # queued and decided within one transaction: nothing was written
            self._fresh_pending.discard(key)
            self.dirty.pop(key, None)
        else:
            self.dirty[key] = None

    # ---------------------------------------------------------------- changelog

    def drain_changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) for every key changed since the last drain; None = tombstone."""
        dirty, self.dirty = self.dirty, {}
        self._fresh_pending = set()
        kv, pending = self.kv, self.pending
        for key in dirty:
            prefix = key[:2]
            if prefix == "q:":
                p = pending.get(key)
                yield key.encode("utf-8"), None if p is None else encode_pending(p)
            elif prefix == "x:":
                flat = kv.get(key)
                yield key.encode("utf-8"), None if flat is None else orjson.dumps(exposure_rows(flat))
            else:
                value = kv.get(key)
                yield key.encode("utf-8"), None if value is None else encode_value(value)

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (restores are not changes: nothing becomes dirty)."""
        k = key.decode("utf-8")
        target = self.pending if k.startswith("q:") else self.kv
        if value is None:
            old = target.pop(k, None)
            if k.startswith("x:") and old is not None:
                self.exposure_count -= len(old) // EXPOSURE_WIDTH
                self.household_count -= 1
            return
        v = orjson.loads(value)
        if k.startswith("x:"):
            v = flat_exposures(v)
            old = self.kv.get(k)
            self.household_count += old is None
            self.exposure_count += (len(v) - len(old or ())) // EXPOSURE_WIDTH
        elif k.startswith("q:"):
            v = decode_pending(v)
        target[k] = v


def encode_value(value: Any) -> bytes:
    """Compact JSON (UTF-8, no escapes for non-ASCII text), as ``json.dumps(separators=(",", ":"),
    ensure_ascii=False)`` writes it for these values."""
    return orjson.dumps(value)


def encode_pending(p: dict[str, Any]) -> bytes:
    key = p["key"]
    return orjson.dumps({
        "raw": base64.b64encode(p["raw"]).decode("ascii"), "arr": p["arr"], "topic": p["topic"], "p": p["p"],
        "o": p["o"], "key": None if key is None else base64.b64encode(key).decode("ascii"),
    })


def decode_pending(j: dict[str, Any]) -> dict[str, Any]:
    return {**j, "raw": base64.b64decode(j["raw"]), "key": None if j["key"] is None else base64.b64decode(j["key"])}
