"""Which replica decides which shard: the lease of shard k is partition k of a topic nobody
writes, held by whichever member of the consumer group ``<group>-lease`` Kafka assigned it to.

Why a lease at all: caps, tiers and order ids are decided per advertiser and contract while
conversions arrive keyed by household, so one process must decide all of an advertiser's
conversions (``TALLY_ATTRIBUTION_SHARDS`` splits the advertisers into shards, one lease
partition each). Two replicas deciding one shard used to fence each other at
``init_transactions`` (the same transactional id) in turn: a ping-pong. With the lease a
replica decides only the shards whose partitions it holds; one holding none waits as a standby,
before it touches a transactional id. A replica that dies loses its shards to the others after
the lease group's session timeout (10 s; restarted within it, it is its own static member and
gets them straight back); one that stops keeps them as long (a static member does not leave the
group on close).

Correctness never rests on the lease: the transactional ids do. A replica taking a shard over
fences the old incarnation and aborts its open transaction, so a paused one that still believes
it holds the lease can commit nothing. The lease only keeps the replicas from taking turns and
spreads the shards over them. The group uses the cooperative-sticky assignor: a replica joining
takes only the shards that move to it, each revoked first from its holder, which hands it over
cleanly (commits and stops it: ``Replica``) before the second rebalance gives it to the newcomer;
the other shards never stop. An eager assignor would stop every shard at every join.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tally_streams import topics
from tally_streams.kafka import consumer_config
from tally_streams.topics import TopicSpec

log = logging.getLogger("tally.attribution.lease")

POLL_S = 0.2


def lease_topic_spec(name: str, shards: int = 1) -> TopicSpec:
    """The lease topic (``topics.INTERNAL``) under ``name``: one partition per shard, never written."""
    return replace(next(s for s in topics.INTERNAL if s.name == "attribution.processor-lease").renamed(name),
                   partitions=shards)


class Lease:
    """Holds (or waits for) lease partitions in the background: ``on_assign`` gets the shards
    given to this member, ``on_revoke`` those taken away (it returns once they stopped here).
    ``failed`` holds what broke the lease thread."""

    def __init__(self, bootstrap: str, group: str, topic: str, *, member: str,
                 on_assign: Callable[[list[int]], None], on_revoke: Callable[[list[int]], None]) -> None:
        self.group, self.topic, self.member = group, topic, member
        self._assign_cb, self._revoke_cb = on_assign, on_revoke
        self.failed: list[BaseException] = []
        self._stop = threading.Event()
        # static membership: a replica restarted within the session timeout gets its leases back
        # at once, without a rebalance (a killed single replica does not wait 10 s for itself)
        self._consumer = Consumer(consumer_config(
            bootstrap, group, **{"partition.assignment.strategy": "cooperative-sticky", "client.id": member,
                                 "group.instance.id": member}))
        self._thread = threading.Thread(target=self._run, name="attribution-lease", daemon=True)

    def start(self) -> None:
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        self._thread.start()

    def _shards(self, partitions: list[TopicPartition]) -> list[int]:
        return sorted(tp.partition for tp in partitions if tp.topic == self.topic)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        shards = self._shards(partitions)
        if shards and not self._stop.is_set():
            log.info("processor lease acquired", extra={"group": self.group, "member": self.member, "shards": shards})
            self._call(self._assign_cb, shards)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        shards = self._shards(partitions)
        if shards:
            log.info("processor lease revoked", extra={"group": self.group, "member": self.member, "shards": shards})
            self._call(self._revoke_cb, shards)

    def _call(self, fn: Callable[[list[int]], None], shards: list[int]) -> None:
        try:
            fn(shards)
        except BaseException as exc:  # raised inside consume(): keep it for the replica instead
            log.exception("lease callback failed", extra={"shards": shards})
            self.failed.append(exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # consume drives the group protocol (and the callbacks above); nothing is ever
                # written to the topic, so no record comes back
                self._consumer.consume(num_messages=1, timeout=POLL_S)
            except KafkaException as exc:  # a broker moving: keep polling, the session decides
                log.warning("lease poll failed", extra={"error": str(exc)})
            except RuntimeError:  # closed under us
                return

    def close(self) -> None:
        """Stop holding the leases (the other replicas take them once this member's session times out)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("lease close failed", extra={"error": str(exc)})
