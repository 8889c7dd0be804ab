"""faust's aiokafka transport, reading only committed records.

faust 0.15.3 builds its consumer with ``isolation_level="read_uncommitted"`` unless the app runs
``processing_guarantee="exactly_once"`` (``faust/transport/drivers/aiokafka.py``,
``_create_worker_consumer``). Metering writes ``billing.running_totals`` in Kafka transactions,
so a read-uncommitted reader would take the totals of an aborted transaction (a metering worker
killed mid-batch) into the series. Tally does not use faust's exactly-once mode (see DESIGN:
faust-streaming issues #517, #323, #177), so this transport keeps faust's at-least-once
processing and only changes what the consumer may see: committed records, like every other
Tally reader. Registered as the ``tallykafka://`` broker scheme by ``tally_pacing.app``.

It also shortens the fetch wait faust hard-codes (``fetch_max_wait_ms=1500``): aiokafka keeps
one fetch in flight per broker, and a fetch sent while the running totals' records were still
being consumed holds only the idle inputs (budget alerts, terms), which the broker answers
after the whole wait — 1.5 s in which no running total could be fetched (issue 17: most of the
pacing latency at 5,000 updates/s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver
from mode.services import WaitResults

from tally_streams.security import faust_credentials

#: how long the broker may hold a fetch that finds nothing new (aiokafka's own default is 500 ms):
#: the running totals wait at most this behind a fetch of idle partitions, and an idle worker
#: sends about 10 empty fetches a second
FETCH_MAX_WAIT_MS = 100


class ReadCommittedConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the level as given and hands it to its Fetcher in start(), which runs after this
        consumer._isolation_level = "read_committed"
        # faust hard-codes fetch_max_wait_ms=1500. aiokafka keeps one fetch in flight per broker and
        # leaves out the partitions whose records still wait to be consumed, so a fetch of only the idle
        # partitions (budget alerts, terms) parked the running totals for 1.5 s at a time (issue 17).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """faust's fetch loop (``Consumer._drain_messages``, the only caller on a consumer) hands
        every record to the conductor as ``wait_first(callback(message), suspend_flow.wait())``:
        four tasks and an ``asyncio.wait`` per record, 14 % of the worker's CPU at 5,000 updates/s
        (issue 17). While the flow is not suspended and the consumer has not stopped or crashed,
        awaiting the callback itself gives the same result (it is the first to finish unless the
        flow is suspended meanwhile: then it still completes — the conductor only waits for room
        in faust's producer buffer — where faust would drop the record, and the rebalance that
        suspended the flow seeks back to the committed offsets either way)."""
        if (len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[0]) and asyncio.iscoroutine(coros[1])
                and not self.suspend_flow.is_set() and not self._stopped.is_set() and not self._crashed.is_set()):
            coros[1].close()  # suspend_flow.wait(), never started
            return WaitResults([coros[0]], [await coros[0]], False)
        return await super().wait_first(*coros, timeout=timeout)


class Transport(driver.Transport):
    Consumer = Consumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Tally's Kafka security settings (tally_streams.security: TALLY_KAFKA_SECURITY_PROTOCOL and the
        # principal's user and password) as faust's broker_credentials, set before faust builds its
        # producer and consumers (tally_pacing.app leaves them unset: they come from here only)
        credentials = faust_credentials()
        if credentials is not None:
            self.app.conf.broker_credentials = credentials
