"""End to end: a simulated month through every service, invoices equal to the cent — with a late
IO (a contract approved after half of its traffic was sent) and vendors' IVT reports; and the same
month in secure mode (SASL/SCRAM, ACLs, every service its own principal: issue 16 item 10)."""

from __future__ import annotations

import io
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tally_kit.settings import load
from tally_metering.replay import run_replay
from tally_metering.settings import SPEC as METERING_SPEC
from tally_sim.expected import recompute
from tally_sim.run import read_record
from tally_streams import acls
from tests.integration.security.secure import SecureBroker, secure_broker

from .conftest import created
from .e2e_flow import describe, read_topic, run_month
from .e2e_secure import SecureStack
from .e2e_stack import PY, ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

IVT_REPORTS = 4  # the CPM contracts take turns: flat USD twice, the capped graduated EUR and the JPY minimum once


async def test_a_month_of_simulated_traffic_invoices_to_the_cent(stack: Stack) -> None:
    await a_month_invoices_to_the_cent(stack, impressions=20_000)


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    with secure_broker() as broker:
        yield broker


@pytest.fixture
async def secure_stack(tmp_path: Path, secure: SecureBroker, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with created(SecureStack(tmp_path, secure.bootstrap, broker=secure), request) as s:
        yield s


async def test_the_same_month_invoices_to_the_cent_in_secure_mode(secure_stack: Stack, secure: SecureBroker,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every service on its own principal with only the catalog's grants; a smaller month, the same checks.
    The replay is the operator's tool: in this process and its CLI it runs as the admin."""
    for name, value in secure.env_of_admin().items():
        monkeypatch.setenv(name, value)
    await a_month_invoices_to_the_cent(secure_stack, impressions=5_000)
    # ... and each service ran as its own principal, knowing no other password
    for process, service in (("contracts", "contracts"), ("ingest", "ingest"), ("spend", "metering"),
                             ("invoicing", "invoicing")):
        environ = Path(f"/proc/{secure_stack.pid(process)}/environ").read_bytes().split(b"\0")
        env = dict(e.split(b"=", 1) for e in environ if b"=" in e)
        assert env[b"TALLY_KAFKA_USERNAME"] == acls.username(service).encode(), process
        assert env[b"TALLY_KAFKA_PASSWORD"] == secure.passwords[acls.username(service)].encode(), process
        assert not [k for k in env if k.startswith(b"TALLY_E2E_KAFKA_")], process


async def a_month_invoices_to_the_cent(stack: Stack, *, impressions: int) -> None:
    expected, actual = await run_month(stack, impressions=impressions, seed=11, late_io=1, ivt_reports=IVT_REPORTS)
    assert expected.invoices and expected.payouts, "the scenario bills something"
    assert actual["invoices"] == expected.invoices, describe(expected, actual)
    assert actual["statements"] == expected.payouts, describe(expected, actual)
    numbers = sorted(actual["numbers"])
    assert len(set(numbers)) == len(numbers) == len(expected.invoices)
    trial = actual["trial_balance"]
    assert trial.get("balanced", True) is True, trial

    # Metering decided every IVT report as the recomputation did: applied, the same impressions credited.
    assert len(expected.ivt_reports) == IVT_REPORTS
    assert all(status == "applied" and n > 0 for status, n in expected.ivt_reports.values()), expected.ivt_reports
    assert actual["ivt_reports"] == expected.ivt_reports
    # The record holds the late IO's approval after part of the traffic, and the reports after all of it.
    contracts, lines = read_record(actual["record"])
    late = [c for c in contracts if c.late_io]
    assert len(late) == 1
    kinds = [e["kind"] for e in lines]
    approved = kinds.index("contract_approved")
    assert lines[approved]["event"]["contract_id"] == late[0].contract_id
    assert "impression" in kinds[:approved] and "impression" in kinds[approved:]
    assert kinds[-IVT_REPORTS:] == ["ivt_report"] * IVT_REPORTS
    # ... and the credits changed what is owed (the flat contract's invoice is lower without them).
    flat_key = next(k for k in expected.invoices if k[0] == late[0].terms.common.advertiser_id)
    without = recompute(contracts, [e for e in lines if e["kind"] != "ivt_report"])
    assert expected.invoices[flat_key] < without.invoices[flat_key]

    # Metering's replay recomputes every closed period from the raw topics and agrees with it.
    closes = {(r["contract_id"], r["period_key"]) for r in
              read_topic(stack, stack.topic["billing.periods_closed"], "period_closed")}
    assert len(closes) >= len(contracts)
    settings = load(METERING_SPEC, stack.env())
    for contract_id, period_key in sorted(closes):
        out = io.StringIO()
        assert run_replay(settings, contract_id, period_key, out=out) == 0, out.getvalue()
    contract_id, period_key = sorted(closes)[0]
    cli = subprocess.run([PY, "-m", "tally_metering", "replay", "--contract", contract_id, "--period", period_key],
                         cwd=ROOT, env=stack.env(), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and cli.stdout.rstrip().endswith("equal"), cli.stdout + cli.stderr
