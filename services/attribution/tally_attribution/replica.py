"""One process of the attribution processor (``python -m tally_attribution processor``): it
holds whichever shard leases the group ``<group>-lease`` gives it (``lease.py``) and runs a
``Processor`` per shard held, each on its own thread with its own transactional id, consumer
group, changelog partition and store.

Why shards of advertisers, each reading every record, rather than re-keying conversions by
advertiser first: a decision needs the household's exposures of the conversion's advertiser
(impressions arrive keyed by household) and the settle gate needs every impression partition's
progress, so each shard reads both topics whole and keeps only its advertisers' exposures and
decisions. That costs each shard a read (and a compiled decode) of every impression, but keeps
one stage, one transaction per cycle and the decision order of a single processor: K shards
decide exactly what one processor would (``DOMAIN``: a conversion id counted once across
advertisers is kept by remembering the other shards' ids in order, ``Decider.decided_elsewhere``).

A shard revoked from this replica (another one joined) is stopped before the revoke returns: it
commits its open transaction and closes, so the replica taking it over restores exactly that
state. A shard that fails stops the whole process, which restarts from Kafka.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from tally_kit.clock import Clock
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import admin_config, ensure_topics

from .lease import Lease, lease_topic_spec
from .metrics import ProcessorMetrics
from .processor import KAFKA_TIMEOUT_S, Processor, ProcessorFailed
from .settings import AttributionSettings

log = logging.getLogger("tally.attribution.replica")

#: how long a revoked shard may take to commit and close before the process gives up on it
HANDOVER_S = 60.0


class _Running:
    """One shard's processor on its own thread; ``errors`` holds what it raised."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=f"attribution-shard-{processor.shard}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.processor.run(self.stop)
        except BaseException as exc:
            log.exception("shard failed", extra={"shard": self.processor.shard})
            self.errors.append(exc)


class Replica:
    def __init__(self, settings: AttributionSettings, catalog: SchemaCatalog, *, clock: Clock | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.s, self.catalog, self.clock = settings, catalog, clock
        self.registry = registry or CollectorRegistry()
        self.metrics = ProcessorMetrics(self.registry)
        self.shards = settings.attribution_shards
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        bootstrap = self.s.kafka_bootstrap
        t_lease = self.s.attribution_topic_lease
        ensure_topics(bootstrap, [lease_topic_spec(t_lease, self.shards)])  # each shard ensures its changelog
        self._check_lease_topic(bootstrap, t_lease)
        # A standby waits in the lease group, before it touches a transactional id (lease.py says why).
        lease = Lease(bootstrap, f"{self.s.attribution_group}-lease", t_lease,
                      member=self.s.attribution_replica_id or self.s.attribution_transactional_id,
                      on_assign=self._start, on_revoke=self._stop)
        lease.start()
        log.info("standby: waiting for the processor lease", extra={"group": lease.group, "member": lease.member,
                                                                  "shards": self.shards})
        try:
            while not stop.wait(0.1):
                if lease.failed:
                    raise ProcessorFailed(f"processor lease failed: {lease.failed[0]}") from lease.failed[0]
                with self._lock:
                    failed = [(k, r.errors[0]) for k, r in self._running.items() if r.errors]
                if failed:
                    k, exc = failed[0]
                    raise ProcessorFailed(f"shard {k} failed: {exc}") from exc
        finally:
            lease.close()  # first: no shard is given to us while the others stop
            with self._lock:
                held = list(self._running)
            self._stop(held)
            self.metrics.active.set(0)

    def _check_lease_topic(self, bootstrap: str, topic: str) -> None:
        """One lease partition per shard, exactly: a partition more would be a shard nobody
        decides being balanced like one, a partition less a shard without a lease."""
        admin = AdminClient(admin_config(bootstrap, **{"client.id": "tally-attribution-processor"}))
        count = len(admin.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics[topic].partitions)
        if count != self.shards:
            raise ProcessorFailed(f"{topic} has {count} partitions, not one per shard ({self.shards}, "
                                  "TALLY_ATTRIBUTION_SHARDS): a shard count needs a lease topic of its own")

    def _start(self, shards: list[int]) -> None:
        """Lease callback: run the shards given to this replica."""
        with self._lock:
            for k in shards:
                if k < self.shards and k not in self._running:
                    self._running[k] = _Running(Processor(self.s, self.catalog, clock=self.clock, registry=self.registry,
                                                          shard=k, metrics=self.metrics))
        self._deciding()

    def _deciding(self) -> None:
        """The shards this replica runs now: the gauge and the log line (the bench reads it)."""
        with self._lock:
            held = sorted(self._running)
        self.metrics.active.set(len(held))
        log.info("deciding shards", extra={"shards": held, "of": self.shards})

    def _stop(self, shards: list[int]) -> None:
        """Lease callback (and the replica's own stop): each shard commits its open transaction
        and closes before this returns, so its next holder restores all it did."""
        with self._lock:
            stopping = [self._running[k] for k in shards if k in self._running]
        for r in stopping:
            r.stop.set()
        for r in stopping:
            r.thread.join(HANDOVER_S)
            if r.thread.is_alive():
                r.errors.append(ProcessorFailed(f"shard {r.processor.shard} did not stop within {HANDOVER_S:.0f} s"))
                continue  # stays listed: the replica fails on it
            with self._lock:
                self._running.pop(r.processor.shard, None)
        if stopping:
            log.info("shards handed over", extra={"shards": [r.processor.shard for r in stopping]})
            self._deciding()
