"""One active processor among replicas: the lease is the one partition of a topic nobody
writes, held by whichever member of a consumer group Kafka assigned it to.

Why a lease at all: caps, tiers and order ids are decided per advertiser and contract while
conversions arrive keyed by household, so one process must decide every partition. A second
replica started beside it used to fence the first at ``init_transactions`` (same transactional
id), which then died and, restarted, fenced the second: a ping-pong. With the lease the second
replica waits, as a standby, before it touches the transactional id, and takes over when the
active one dies (after the lease group's session timeout, 10 s; a replica restarted within it
is its own static member and gets the lease straight back) or stops (a static member does not
leave the group on close, so a clean stop waits for the session timeout too).

Correctness never rests on the lease: the transactional id does. A standby that takes over
fences the old incarnation and aborts its open transaction, so a paused active one that still
believes it holds the lease can commit nothing. The lease only keeps the replicas from taking
turns. The group uses the cooperative-sticky assignor, so a standby joining never takes the
partition from the member holding it (an eager assignor revokes it at every join and may give
it to the newcomer).
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tally_streams import topics
from tally_streams.kafka import consumer_config
from tally_streams.topics import TopicSpec

log = logging.getLogger("tally.attribution.lease")

POLL_S = 0.2


def lease_topic_spec(name: str) -> TopicSpec:
    """The lease topic (``topics.INTERNAL``) under ``name``: one partition, never written."""
    return next(s for s in topics.INTERNAL if s.name == "attribution.processor-lease").renamed(name)


class Lease:
    """Holds (or waits for) the lease in the background; ``held`` and ``lost`` say where it stands."""

    def __init__(self, bootstrap: str, group: str, topic: str, *, member: str) -> None:
        self.group, self.topic, self.member = group, topic, member
        self.held = threading.Event()
        #: set once a held lease was revoked or lost: this process must stop deciding
        self.lost = threading.Event()
        self._stop = threading.Event()
        # static membership: a replica restarted within the session timeout gets its lease back
        # at once, without a rebalance (a killed single replica does not wait 10 s for itself)
        self._consumer = Consumer(consumer_config(
            bootstrap, group, **{"partition.assignment.strategy": "cooperative-sticky", "client.id": member,
                                 "group.instance.id": member}))
        self._thread = threading.Thread(target=self._run, name="attribution-lease", daemon=True)

    def start(self) -> None:
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        self._thread.start()

    def wait(self, stop: threading.Event, *, log_every_s: float = 30.0) -> bool:
        """Block until the lease is held (True) or ``stop`` is set (False)."""
        if not self.held.is_set():
            log.info("standby: waiting for the processor lease", extra={"group": self.group, "member": self.member})
        while not self.held.wait(0.1):
            if stop.is_set() or self.lost.is_set():
                return False
            log_every_s -= 0.1
            if log_every_s <= 0:
                log_every_s = 30.0
                log.info("standby: still waiting for the processor lease", extra={"group": self.group})
        log.info("processor lease acquired", extra={"group": self.group, "member": self.member})
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.topic == self.topic for tp in partitions):
            self.held.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._stop.is_set():  # our own close
            self.held.clear()
            return
        if self.held.is_set() and any(tp.topic == self.topic for tp in partitions):
            self.held.clear()
            self.lost.set()
            log.error("processor lease lost", extra={"group": self.group, "member": self.member})

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
        """Stop holding the lease (a standby takes it once this member's session times out)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("lease close failed", extra={"error": str(exc)})
