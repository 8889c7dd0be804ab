"""End to end: a simulated month through every service, invoices equal to the cent — with a late
IO (a contract approved after half of its traffic was sent) and vendors' IVT reports."""

from __future__ import annotations

import io
import subprocess

import pytest

from tally_kit.settings import load
from tally_metering.replay import run_replay
from tally_metering.settings import SPEC as METERING_SPEC
from tally_sim.expected import recompute
from tally_sim.run import read_record

from .e2e_flow import describe, read_topic, run_month
from .e2e_stack import PY, ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

IVT_REPORTS = 4  # the CPM contracts take turns: flat USD twice, the capped graduated EUR and the JPY minimum once


async def test_a_month_of_simulated_traffic_invoices_to_the_cent(stack: Stack) -> None:
    expected, actual = await run_month(stack, impressions=20_000, seed=11, late_io=1, ivt_reports=IVT_REPORTS)
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
