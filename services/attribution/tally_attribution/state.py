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

Each change marks its key dirty; the processor writes the dirty keys (or tombstones) to the
compacted changelog topic inside the same Kafka transaction as the outputs and the input
offsets, so state, outputs and positions move together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

SEP = "\x1f"


class AttributionState:
    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}
        #: pending conversions live apart so the settle gate can scan them cheaply
        self.pending: dict[str, dict[str, Any]] = {}
        self.dirty: set[str] = set()
        self.exposure_count = 0
        self.household_count = 0

    # ---------------------------------------------------------------- generic access

    def get(self, key: str) -> Any:
        return self.kv.get(key)

    def put(self, key: str, value: Any) -> None:
        if key.startswith("x:"):
            old = self.kv.get(key)
            self.household_count += old is None
            self.exposure_count += len(value) - len(old or ())
        self.kv[key] = value
        self.dirty.add(key)

    def delete(self, key: str) -> None:
        if key in self.kv:
            if key.startswith("x:"):
                self.exposure_count -= len(self.kv[key])
                self.household_count -= 1
            del self.kv[key]
            self.dirty.add(key)

    def put_pending(self, key: str, value: dict[str, Any]) -> None:
        self.pending[key] = value
        self.dirty.add(key)

    def drop_pending(self, key: str) -> None:
        if self.pending.pop(key, None) is not None:
            self.dirty.add(key)

    # ---------------------------------------------------------------- changelog

    def drain_changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) for every key changed since the last drain; None = tombstone."""
        dirty, self.dirty = self.dirty, set()
        for key in sorted(dirty):
            value = self.pending.get(key) if key.startswith("q:") else self.kv.get(key)
            yield key.encode("utf-8"), None if value is None else encode_value(value)

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (restores are not changes: nothing becomes dirty)."""
        k = key.decode("utf-8")
        target = self.pending if k.startswith("q:") else self.kv
        if value is None:
            old = target.pop(k, None)
            if k.startswith("x:") and old is not None:
                self.exposure_count -= len(old)
                self.household_count -= 1
            return
        v = json.loads(value)
        if k.startswith("x:"):
            old = self.kv.get(k)
            self.household_count += old is None
            self.exposure_count += len(v) - len(old or ())
        target[k] = v


def encode_value(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
