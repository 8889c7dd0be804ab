"""The contracts OpenAPI document types ``Terms`` in full, with the bounds as JSON Schema
keywords, and documents the partner view (issue 16): what the API accepts, the document
accepts; what it refuses for a bound, the document refuses too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_billing.terms import validate_terms
from tally_contracts import domain, views
from tally_contracts.openapi_spec import spec
from tally_kit.db import dumps
from tests.apidoc_check import component_validator

from .test_contracts_bounds import worst_cpa, worst_cpm


def validator(name: str) -> Any:
    return component_validator(spec(), name)


@pytest.mark.parametrize("make", [cpm_terms_json, cpa_terms_json, worst_cpm, worst_cpa])
def test_valid_terms_are_valid_for_the_document(make: Any) -> None:
    raw = make()
    assert validate_terms(raw) == []
    errors = [e.message for e in validator("Terms").iter_errors(json.loads(json.dumps(raw)))]
    assert errors == []


@pytest.mark.parametrize(("field", "value"), [
    ("notice_period_days", 1_000_000), ("payment_terms_days", 366), ("renewal_term_months", 121),
    ("flight_end", "9999-12-31"), ("flight_start", "1999-12-31"), ("advertiser_id", "adv acme"),
    ("advertiser_id", "x" * 257), ("po_reference", "x" * 101), ("committed_value", "1" * 14),
    ("campaign_ids", [f"c{i}" for i in range(1001)]), ("escalator_pct", "1e3"),
])
def test_a_value_beyond_a_bound_is_refused_by_the_document_and_by_the_api(field: str, value: Any) -> None:
    raw = cpm_terms_json()
    raw["common"][field] = value
    assert not validator("Terms").is_valid(raw)
    assert any(p.path == f"common.{field}" for p in validate_terms(raw))


def test_the_partner_view_matches_its_schema_and_the_staff_view_its_own() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    row = {"contract_id": "ctr_1", "version": 1, "kind": "initial", "state": "approved", "terms": cpa_terms_json(),
           "effective_from": now, "ends_at": None, "backdated": False, "committed_value": "5000.00", "row_revision": 1,
           "authors": ["olivia"], "submitted_by": "olivia", "submitted_at": now, "submission": 1,
           "required_approvals": {"approver": 1}, "decided_at": now, "decided_by": "alex", "decision_comment": None,
           "comment": None, "created_at": now, "updated_at": now}
    version = json.loads(dumps(views.version(row, [])))
    view = domain.partner_version(version, "partner-tv1")
    assert [e.message for e in validator("PartnerVersion").iter_errors(view)] == []
    assert not validator("PartnerVersion").is_valid(version)
    assert [e.message for e in validator("Version").iter_errors(version)] == []


def test_every_ref_in_the_document_resolves() -> None:
    from tally_kit import apidoc

    assert apidoc.unresolved_refs(spec()) == []
