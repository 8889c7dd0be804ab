"""End to end: a simulated month through every service, invoices equal to the cent."""

from __future__ import annotations

import pytest

from .e2e_flow import describe, run_month
from .e2e_stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def test_a_month_of_simulated_traffic_invoices_to_the_cent(stack: Stack) -> None:
    expected, actual = await run_month(stack, impressions=20_000, seed=11)
    assert expected.invoices and expected.payouts, "the scenario bills something"
    assert actual["invoices"] == expected.invoices, describe(expected, actual)
    assert actual["statements"] == expected.payouts, describe(expected, actual)
    numbers = sorted(actual["numbers"])
    assert len(set(numbers)) == len(numbers) == len(expected.invoices)
    trial = actual["trial_balance"]
    assert trial.get("balanced", True) is True, trial
