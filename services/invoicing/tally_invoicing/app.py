"""Wiring: the aiohttp app (API, OpenAPI, metrics, health) and, optionally, the consumer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.registry import Collector

from tally_kit import audit, idempotency
from tally_kit import web as kit_web
from tally_kit.auth import TokenVerifier
from tally_kit.db import POOL_KEY, pool_context
from tally_kit.migrations import migrate
from tally_kit.openapi import add_openapi
from tally_streams.avro import SchemaCatalog

from .api import POLICY_KEY, add_routes
from .consumer import InvoicingConsumer
from .lifecycle import Policy
from .metrics import METRICS
from .openapi_spec import build_spec
from .settings import InvoicingSettings

SERVICE = "invoicing"
MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
SETTINGS_KEY: web.AppKey[InvoicingSettings] = web.AppKey("tally_invoicing_settings", InvoicingSettings)


class _ServiceMetrics(Collector):
    """Serves the service's own metric catalogue from each app's registry."""

    def collect(self) -> Iterable[Any]:
        yield from METRICS.registry.collect()


def policy_from(settings: InvoicingSettings) -> Policy:
    return Policy(four_eyes_threshold=settings.invoicing_four_eyes_threshold,
                  minimum_payout=settings.invoicing_minimum_payout)


def build_app(settings: InvoicingSettings, verifier: TokenVerifier | None = None, *, run_consumer: bool | None = None,
              apply_migrations: bool = True) -> web.Application:
    app = kit_web.create_app(SERVICE, verifier=verifier or TokenVerifier.from_env())
    app[kit_web.REGISTRY_KEY].register(_ServiceMetrics())
    app[SETTINGS_KEY] = settings
    app[POLICY_KEY] = policy_from(settings)

    async def migrations(_: web.Application) -> AsyncIterator[None]:
        if apply_migrations:
            await migrate(settings.invoicing_database_url, MIGRATIONS)
        yield

    app.cleanup_ctx.append(migrations)
    app.cleanup_ctx.append(pool_context(lambda _: settings.invoicing_database_url))
    consume = settings.invoicing_consume if run_consumer is None else run_consumer
    if consume:  # the service process's background work; tests build API-only apps
        app.cleanup_ctx.append(_consumer_ctx)
        app.cleanup_ctx.append(audit.chain_watch(app[kit_web.REGISTRY_KEY]))

    async def db_ready(a: web.Application) -> None:
        async with a[POOL_KEY].acquire() as conn:
            await conn.fetchval("SELECT 1")

    kit_web.add_readiness_check(app, db_ready)
    idempotency.install(app)
    add_openapi(app, build_spec())
    add_routes(app)
    return app


def make_consumer(settings: InvoicingSettings, pool: Any) -> InvoicingConsumer:
    return InvoicingConsumer(
        bootstrap=settings.kafka_bootstrap, group_id=settings.invoicing_consumer_group,
        periods_closed_topic=settings.invoicing_periods_closed_topic,
        adjustments_topic=settings.invoicing_adjustments_topic, pool=pool, catalog=SchemaCatalog.load(),
        batch_max=settings.invoicing_batch_max)


async def _consumer_ctx(app: web.Application) -> AsyncIterator[None]:
    consumer = make_consumer(app[SETTINGS_KEY], app[POOL_KEY])
    task = asyncio.create_task(consumer.run(), name="invoicing-consumer")
    try:
        yield
    finally:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=15)
