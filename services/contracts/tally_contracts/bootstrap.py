"""The ONE place the contracts service layer is wired: repository, step writer, clock, approval
policy and metrics, bound to the handlers. The API, the standalone scheduler, the seed and the
tests all start from :func:`bootstrap`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from tally_kit.clock import Clock
from tally_streams.avro import SchemaCatalog

from . import commands, handlers
from .domain import ApprovalPolicy
from .handlers import Deps
from .metrics import ContractMetrics
from .outbox import StepWriter
from .repo import ContractRepo


class Contracts:
    """The service layer as its callers see it: :meth:`handle` one command or query."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        #: contract ids the last scheduler tick could not handle (retried by the next)
        self.last_tick_failures: list[str] = []

    @property
    def repo(self) -> ContractRepo:
        return self.deps.repo

    @property
    def policy(self) -> ApprovalPolicy:
        return self.deps.policy

    @property
    def metrics(self) -> ContractMetrics | None:
        return self.deps.metrics

    async def handle(self, message: Any) -> Any:
        """Run the message's handler; what it returns is the answer (a view, or a tick's steps)."""
        return await handlers.HANDLERS[type(message)](message, self.deps)

    async def tick(self, now: datetime | None = None) -> list[str]:
        """One scheduler pass (at ``now``, else the clock's); returns the steps it took."""
        result: handlers.TickResult = await self.handle(commands.Tick(now))
        self.last_tick_failures = result.failed
        return result.done


def bootstrap(pool: asyncpg.Pool, clock: Clock, policy: ApprovalPolicy, catalog: SchemaCatalog,
              metrics: ContractMetrics | None = None) -> Contracts:
    repo = ContractRepo()
    return Contracts(Deps(pool=pool, clock=clock, policy=policy, repo=repo, writer=StepWriter(catalog, repo),
                          metrics=metrics))
