"""The one state-transition table of invoices and payout statements (tally_invoicing.domain)."""

from __future__ import annotations

import pytest

from tally_invoicing.domain import INVOICE, STATEMENT, TRANSITIONS, DocumentKind


@pytest.mark.parametrize("kind", [INVOICE, STATEMENT])
def test_every_action_of_a_kind_is_a_transition_of_the_table(kind: DocumentKind) -> None:
    for action in kind.actions:
        t = kind.transition(action)
        assert t is TRANSITIONS[action] and t.allowed_from


def test_both_kinds_share_finalize_send_and_mark_paid_and_only_an_invoice_is_voided() -> None:
    assert set(INVOICE.actions) - set(STATEMENT.actions) == {"void"}
    assert STATEMENT.transition("void") is None
    assert INVOICE.transition("void") is not None


def test_the_lifecycle_runs_draft_finalized_sent_paid() -> None:
    assert TRANSITIONS["finalize"].allowed_from == ("draft",)
    assert TRANSITIONS["send"].allowed_from == ("finalized",)
    assert TRANSITIONS["mark-paid"].allowed_from == ("finalized", "sent")
    assert TRANSITIONS["void"].allowed_from == ("finalized", "sent")
    assert "draft" not in TRANSITIONS["void"].allowed_from and "paid" not in TRANSITIONS["void"].allowed_from
