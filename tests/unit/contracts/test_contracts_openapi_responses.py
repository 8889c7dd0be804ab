"""The contracts document types every answer (issue 16 item 6): the views ``views.py`` renders
from rows like the repository's are valid for the document's response schemas, and the
schemas are closed — a key the view adds, drops or turns null without the document saying
so fails here, not in a client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_contracts import domain, views
from tally_contracts.domain import DerivedStatus, VersionFacts
from tally_contracts.openapi_spec import spec
from tally_kit.audit import AuditEntry
from tally_kit.auth import Principal
from tally_kit.db import dumps
from tests.apidoc_check import schema_errors

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
STAFF = Principal(subject="olivia", roles=frozenset({"ops"}))
PARTNER = Principal(subject="pat", roles=frozenset({"partner"}), tenant_type="partner", tenant_id="partner-tv1")
ADVERTISER = Principal(subject="ada", roles=frozenset({"advertiser"}), tenant_type="advertiser", tenant_id="adv-shop")


def wire(view: Any) -> Any:
    """The view as the API writes it (``json_ok``: Decimals as strings, instants ISO 8601)."""
    return json.loads(dumps(view))


def errors(name: str, view: Any) -> list[str]:
    return schema_errors(spec(), name, view)


def contract_row(**over: Any) -> dict[str, Any]:
    row = {"id": "ctr_1", "name": "Shop Q2", "contract_type": "cpa", "advertiser_id": "adv-shop",
           "partner_ids": ["partner-tv1", "partner-tv2"], "currency": "EUR", "time_zone": "Europe/Berlin",
           "created_by": "olivia", "created_at": T0, "revision": 3, "status": "active", "current_version": 1,
           "terminated_at": None, "auto_renew_cancelled_for": None, "auto_renew_cancelled_by": None,
           "auto_renew_cancelled_at": None}
    return {**row, **over}


def version_row(state: str = "submitted", terms: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    submitted = state != "draft"
    decided = state in ("approved", "rejected")
    row = {"contract_id": "ctr_1", "version": 2, "kind": "amendment", "state": state,
           "terms": terms or cpa_terms_json(), "effective_from": T0, "ends_at": T0 + timedelta(days=90),
           "backdated": False, "committed_value": Decimal("5000.00"), "row_revision": 4, "submission": 1 if submitted else 0,
           "required_approvals": {"approver": 1, "finance": 1} if submitted else None, "authors": ["olivia"],
           "submitted_by": "olivia" if submitted else None, "submitted_at": T0 if submitted else None,
           "decided_at": T0 if decided else None, "decided_by": "alex" if decided else None,
           "decision_comment": "no" if state == "rejected" else None, "comment": None, "created_at": T0,
           "updated_at": T0}
    return {**row, **over}


APPROVALS = [{"approver": "alex", "role": "approver", "comment": None, "at": T0},
             {"approver": "fiona", "role": "finance", "comment": "ok", "at": T0}]
FACTS = [VersionFacts(1, "initial", "approved", T0, None), VersionFacts(2, "amendment", "submitted", T0, None)]
LATEST = {"version": 1, "terms": {**cpm_terms_json(), "common": {**cpm_terms_json()["common"], "auto_renew": True,
                                                                  "renewal_term_months": 12}}}


@pytest.mark.parametrize("state", domain.VERSION_STATES)
@pytest.mark.parametrize("given", [[], APPROVALS[:1]])
def test_a_version_in_every_state_matches_version_and_its_partner_view_partnerversion(
        state: str, given: list[dict[str, Any]]) -> None:
    view = views.version(version_row(state), given if state != "draft" else [])
    assert errors("Version", view) == []
    assert errors("PartnerVersion", views.for_viewer(PARTNER, view)) == []
    assert views.for_viewer(ADVERTISER, view) == view


def test_a_cpm_version_with_no_committed_value_and_no_end_matches() -> None:
    view = views.version(version_row("draft", cpm_terms_json(), committed_value=None, ends_at=None), [])
    assert errors("Version", view) == []


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("latest", [None, LATEST])
@pytest.mark.parametrize("cancelled", [False, True])
def test_a_contract_matches_contract_and_the_partner_view_partnercontract(
        full: bool, latest: dict[str, Any] | None, cancelled: bool) -> None:
    row = contract_row(**({"auto_renew_cancelled_by": "olivia", "auto_renew_cancelled_at": T0} if cancelled else {}))
    derived = DerivedStatus("active", 1)
    staff = views.contract(row, FACTS, derived, STAFF, full=full, latest=latest, published=True)
    partner = views.contract(row, FACTS, derived, PARTNER, full=full, latest=latest, published=False)
    assert errors("Contract", staff) == []
    assert errors("PartnerContract", partner) == []
    page = {"items": [staff], "next_cursor": None}
    assert errors("ContractPage", page) == []
    assert errors("ContractPage", {"items": [partner], "next_cursor": "abc"}) == []


def test_the_created_contract_with_its_draft_matches_contract() -> None:
    staff = views.contract(contract_row(status="draft", current_version=None), FACTS[:1], DerivedStatus("draft", None),
                           STAFF, full=True, latest=None, published=False)
    assert errors("Contract", {**staff, "draft": views.version(version_row("draft"), [])}) == []


def test_the_schemas_are_closed_and_their_keys_required() -> None:
    view = views.version(version_row("approved"), APPROVALS)
    assert errors("Version", {**view, "surprise": 1}) != []
    for key in ("submitted_at", "decided_by", "decision_comment", "comment", "created_at", "updated_at"):
        assert errors("Version", {k: v for k, v in view.items() if k != key}) != [], key
    assert errors("Version", {**view, "approvals": [{**APPROVALS[0], "role": None}]}) != []
    staff = views.contract(contract_row(), FACTS, DerivedStatus("active", 1), STAFF, full=False)
    assert errors("Contract", {k: v for k, v in staff.items() if k != "created_by"}) != []
    partner = views.contract(contract_row(), FACTS, DerivedStatus("active", 1), PARTNER, full=False)
    assert errors("PartnerContract", {**partner, "created_by": "olivia"}) != []
    # the two views of a read are told apart by the document (oneOf picks exactly one)
    assert errors("Contract", partner) != [] and errors("PartnerContract", staff) != []
    assert errors("PartnerVersion", view) != [] and errors("Version", views.for_viewer(PARTNER, view)) != []


def test_versions_diff_and_audit_answers_match() -> None:
    va, vb = version_row("approved", version=1), version_row("submitted")
    vb["terms"]["common"] = {**vb["terms"]["common"], "payment_terms_days": 61}
    assert errors("VersionList", {"items": [views.version(va, APPROVALS)]}) == []
    assert errors("VersionList", {"items": [views.for_viewer(PARTNER, views.version(va, APPROVALS))]}) == []
    for viewer in (STAFF, PARTNER):
        d = views.diff(viewer, "ctr_1", va, vb)
        assert errors("Diff", d) == []
    assert views.diff(STAFF, "ctr_1", va, vb)["changes"] != []
    entry = AuditEntry(seq=7, entity_type="contract", entity_id="ctr_1", action="version.submitted", actor="olivia",
                       tenant_type=None, tenant_id=None, before=None, after={"terms": {}}, at=T0, prev_hash="a" * 64,
                       hash="b" * 64)
    assert errors("AuditPage", {"items": views.audit_entries([entry]), "next_cursor": None}) == []
    assert errors("AuditVerification", {"ok": False, "checked": 3, "first_broken_link": {"seq": 2, "reason": "x"}}) == []
