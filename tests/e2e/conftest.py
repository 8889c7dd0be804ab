from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from .e2e_stack import Stack


@asynccontextmanager
async def created(s: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """``s``'s databases and topics for one test; its service logs printed if the test failed."""
    await s.create()
    try:
        yield s
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(s.log_tail())
        await s.destroy()


@pytest.fixture
async def stack(tmp_path: Path, kafka_bootstrap: str, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with created(Stack(tmp_path, kafka_bootstrap), request) as s:
        yield s


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
