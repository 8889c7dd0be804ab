"""The processor's state: a key → JSON-able value map, changelogged key by key.

Everything the decider must remember lives here, under a one-letter prefix:

``x:<household>``                 exposure index: ``[[impression_id, event_time_us, advertiser_id, campaign_id, partner_id], ...]``
``h:<household>``                 the household's attributed conversions: ``[[contract_id, event_type, event_time_us], ...]``
``c:<conversion_id>``             every decided conversion id (dedupe; attributed ones keep what a reversal needs;
                                  ``"s": "elsewhere"``: decided by another shard, only its id and advertiser)
``o:<advertiser>\\x1f<order_id>``  order ids already counted per advertiser → conversion id
``u:<contract>\\x1f<period>``      contract usage in a period ``[conversions, amount]``
``p:<contract>\\x1f<partner>\\x1f<period>``     partner usage in a period ``[conversions, amount]``
``e:<contract>\\x1f<period>\\x1f<event_type>``  conversions of an event type in a period (tiers)
``q:<topic>/<partition>/<offset>``  conversions waiting for their settle delay
``s:shard``                        ``[shard, shards]``: which shard of how many built this state (``processor._check_shard_key``)

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

With an ``ExposureStore`` (``use_store``: the processor's, on disk) the ``x:`` keys are not in
``kv``: they are read from the store, and the households read or changed since the last commit
are held in ``_x`` (None: none held). The store also keeps a copy of every other key (those stay
in memory too), so a trusted store is the whole state and a start need not read the changelog.
``drain_changes`` encodes each change once, for the changelog and the store; ``committed``
writes those records, the counts and the checkpoint in one write batch after the transaction
committed, and forgets ``_x``. Nothing of an uncommitted transaction ever reaches the store.
Without one (the unit tests' decider) everything stays in ``kv`` as before.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import Any

import orjson

from .store import ExposureStore

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


def decode_exposures(value: bytes | None) -> Exposures | None:
    """An encoded ``x:`` value (changelog and store: a list of rows) as the flat tuple."""
    return None if value is None else tuple(chain.from_iterable(orjson.loads(value)))


_MISSING: Any = object()


class AttributionState:
    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}
        #: the exposure index on disk (None: in ``kv``)
        self.store: ExposureStore | None = None
        #: with a store: households read or changed since the last commit (None = none held)
        self._x: dict[str, Exposures | None] = {}
        #: with a store: the drained changes, written to the store once their transaction committed
        self._drained: list[tuple[bytes, bytes | None]] = []
        #: with a store, while restoring: True = rebuild it from the changelog, False = trust it (skip ``x:``)
        self._rebuilding = False
        self._restored: list[tuple[bytes, bytes | None]] = []
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
        if key.startswith("x:"):
            flat = self.exposures(key)
            return [list(r) for r in exposure_rows(flat)] if flat else None
        return self.kv.get(key)

    def put(self, key: str, value: Any) -> None:
        if key.startswith("x:"):
            self.put_exposures(key, flat_exposures(value))
            return
        self.kv[key] = value
        self.dirty[key] = None

    def delete(self, key: str) -> None:
        if self.store is not None and key.startswith("x:"):
            old = self.exposures(key)
            if old:
                self.exposure_count -= len(old) // EXPOSURE_WIDTH
                self.household_count -= 1
                self._x[key] = None
                self.dirty[key] = None
            return
        if key in self.kv:
            if key.startswith("x:"):
                self.exposure_count -= len(self.kv[key]) // EXPOSURE_WIDTH
                self.household_count -= 1
            del self.kv[key]
            self.dirty[key] = None

    # ---------------------------------------------------------------- exposure index

    def use_store(self, store: ExposureStore) -> None:
        """Keep the exposure index in ``store`` from now on (called before the restore, on an
        empty state)."""
        self.store = store
        self._x = {}

    def exposures(self, key: str) -> Exposures:
        """The flat exposures under ``key`` (``x:<household>``); empty when none."""
        if self.store is None:
            return self.kv.get(key) or ()
        v = self._x.get(key, _MISSING)
        if v is _MISSING:
            v = self._x[key] = decode_exposures(self.store.get(key.encode("utf-8")))
        return v or ()

    def prefetch(self, keys: Sequence[str]) -> None:
        """With a store: read the households of ``keys`` not held yet in one multi-get (a batch of
        impressions or conversions asks for its households together)."""
        if self.store is None:
            return
        x = self._x
        missing = [k for k in dict.fromkeys(keys) if k not in x]
        if missing:
            loads = orjson.loads
            for k, v in zip(missing, self.store.get_many([k.encode("utf-8") for k in missing]), strict=True):
                x[k] = None if v is None else tuple(chain.from_iterable(loads(v)))

    def put_exposures(self, key: str, flat: Exposures) -> None:
        if self.store is None:
            old = self.kv.get(key)
        else:
            old = self.exposures(key) or None
        if old is None:
            self.household_count += 1
            self.exposure_count += len(flat) // EXPOSURE_WIDTH
        else:
            self.exposure_count += (len(flat) - len(old)) // EXPOSURE_WIDTH
        if self.store is None:
            self.kv[key] = flat
        else:
            self._x[key] = flat
        self.dirty[key] = None

    def prune_exposures(self, kept: Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]]) -> int:
        """With a store: each household's exposures through ``kept`` (the decider's trim), read
        from the store one by one (never all at once); changed ones are put or deleted as usual.
        Returns how many changed. Without a store the decider's ``prune`` does this over ``kv``."""
        if self.store is None:
            return 0
        changed = 0

        def trim(key: str, flat: Exposures) -> None:
            nonlocal changed
            rows = exposure_rows(flat)
            left = kept(rows)
            if len(left) != len(rows):
                changed += 1
                if left:
                    self.put_exposures(key, tuple(x for e in left for x in e))
                else:
                    self.delete(key)

        held = dict(self._x)  # this transaction's view first: the store does not have it yet
        for key, value in self.store.items():
            if key not in held:
                flat = decode_exposures(value)
                assert flat is not None
                trim(key, flat)
        for key, flat in held.items():
            if flat:
                trim(key, flat)
        return changed

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
        """(key, value) for every key changed since the last drain; None = tombstone. With a
        store, each is also kept for ``committed``."""
        if self.store is not None:
            drained = self._drained
            for kv_pair in self._drain():
                drained.append(kv_pair)
                yield kv_pair
            return
        yield from self._drain()

    def _drain(self) -> Iterator[tuple[bytes, bytes | None]]:
        dirty, self.dirty = self.dirty, {}
        self._fresh_pending = set()
        kv, pending = self.kv, self.pending
        for key in dirty:
            prefix = key[:2]
            if prefix == "q:":
                p = pending.get(key)
                yield key.encode("utf-8"), None if p is None else encode_pending(p)
            elif prefix == "x:":
                flat = kv.get(key) if self.store is None else self._x.get(key)
                # one exposure (the common household) is its own row: no slicing
                k = key.encode("utf-8")
                v = None if not flat else orjson.dumps((flat,) if len(flat) == EXPOSURE_WIDTH else exposure_rows(flat))
                yield k, v
            else:
                value = kv.get(key)
                yield key.encode("utf-8"), None if value is None else encode_value(value)

    def committed(self, checkpoint: bytes) -> None:
        """The transaction whose changes were drained last committed, with the input offsets
        ``checkpoint``: with a store, its changes (the changelog's records), the counts and the
        checkpoint go into the store in one write batch, and the households held in memory are
        forgotten."""
        if self.store is None:
            return
        drained, self._drained = self._drained, []
        self.store.write_committed(drained, checkpoint, self.household_count, self.exposure_count)
        self._x = {}

    def begin_restore(self, *, trusted: bool) -> None:
        """With a store, at start: ``trusted`` keeps it — the keys other than ``x:`` are loaded
        from it, and the changelog need not be read (its ``x:`` records are skipped if it is);
        otherwise it is wiped, to be rebuilt from the changelog's records (``restore``)."""
        assert self.store is not None
        if not trusted:
            self.store.wipe()
        self._rebuilding = False
        self.household_count, self.exposure_count = self.store.households, self.store.exposures
        if trusted:
            for key, value in self.store.state_items():
                self.restore(key, value)
        self._rebuilding = not trusted

    def end_restore(self, checkpoint: bytes) -> None:
        """With a store, after the changelog was read to its end: a rebuilt store gets its checkpoint."""
        assert self.store is not None
        if self._rebuilding:
            self._flush_restored()
            self.store.set_checkpoint(checkpoint)
            self._rebuilding = False
        self.household_count, self.exposure_count = self.store.households, self.store.exposures

    def _flush_restored(self) -> None:
        assert self.store is not None
        records, self._restored = self._restored, []
        if records:
            self.store.add_restored(records)

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (restores are not changes: nothing becomes dirty)."""
        if self.store is not None:
            if self._rebuilding:  # every record into the store too, in changelog order
                self._restored.append((key, value))
                if len(self._restored) >= 10_000:
                    self._flush_restored()
            if key[:2] == b"x:":
                return
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
