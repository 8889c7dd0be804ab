"""JSON views of contracts and versions — what the API answers — including the partner view.

Pure shaping of rows the repository read: no I/O. A partner user sees itself among the
partners, no staff names, and of each version only the fields and terms that concern it
(``domain.partner_version`` / ``domain.partner_terms``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tally_billing.terms import parse_terms
from tally_kit.audit import AuditEntry
from tally_kit.auth import Principal

from . import domain
from .domain import DerivedStatus, VersionFacts


def etag(v: Mapping[str, Any]) -> str:
    """Strong ETag of a version's editable content; changes with every edit, submit and withdraw."""
    return f'"{v["contract_id"]}.v{v["version"]}.r{v["row_revision"]}"'


def partner_of(p: Principal) -> str | None:
    """The partner id of a partner user, whose reads are the partner view; None for anyone else."""
    return p.tenant_id if p.tenant_type == "partner" else None


def contract(c: Mapping[str, Any], facts: Sequence[VersionFacts], derived: DerivedStatus, viewer: Principal, *,
             full: bool, latest: Mapping[str, Any] | None = None, published: bool = False) -> dict[str, Any]:
    """A contract; ``full`` adds the renewal picture (from ``latest``, the latest approved
    version) and whether every outbox record of it is published."""
    out: dict[str, Any] = {
        "id": c["id"], "name": c["name"], "contract_type": c["contract_type"], "advertiser_id": c["advertiser_id"],
        "partner_ids": list(c["partner_ids"]), "currency": c["currency"], "time_zone": c["time_zone"],
        "status": derived.status, "current_version": derived.current_version, "revision": c["revision"],
        "created_at": c["created_at"], "created_by": c["created_by"], "terminated_at": c["terminated_at"],
    }
    visible = [f for f in facts if not viewer.is_tenant or f.state == "approved"]
    out["versions"] = [{"version": f.version, "kind": f.kind, "state": f.state} for f in visible]
    partner = partner_of(viewer)
    if partner is not None:
        # a partner sees itself among the partners, and no staff name
        out["partner_ids"] = [partner]
        del out["created_by"]
        out["view"] = "partner"
    if full:
        renewal: dict[str, Any] = {"auto_renew": False}
        if latest is not None:
            t = parse_terms(latest["terms"])
            end = domain.term_end(t)
            renewal = {"auto_renew": t.common.auto_renew, "term_ends_at": end, "notice_deadline": None,
                       "cancelled": end is not None and c["auto_renew_cancelled_for"] == end,
                       "cancelled_at": c["auto_renew_cancelled_at"], "cancelled_by": c["auto_renew_cancelled_by"]}
            if partner is not None:
                del renewal["cancelled_by"]
            if end is not None:
                renewal["notice_deadline"] = domain.notice_deadline(end, t.common.notice_period_days)
        out["renewal"] = renewal
        # Stream processors know a contract only from contracts.terms: clients that send
        # traffic right after an approval wait for this (the simulator does).
        out["published"] = published
    return out


def version(v: Mapping[str, Any], approvals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A version with the approvals of its current submission (the staff view)."""
    required = v["required_approvals"] or {}
    return {
        "contract_id": v["contract_id"], "version": v["version"], "kind": v["kind"], "state": v["state"],
        "terms": v["terms"], "effective_from": v["effective_from"], "ends_at": v["ends_at"],
        "backdated": v["backdated"], "committed_value": v["committed_value"], "etag": etag(v),
        "authors": list(v["authors"]), "submitted_by": v["submitted_by"], "submitted_at": v["submitted_at"],
        "submission": v["submission"], "required_approvals": required,
        "approvals": [dict(a) for a in approvals],
        "missing_approvals": domain.remaining(required, [a["role"] for a in approvals]) if v["state"] == "submitted" else {},
        "decided_at": v["decided_at"], "decided_by": v["decided_by"], "decision_comment": v["decision_comment"],
        "comment": v["comment"], "created_at": v["created_at"], "updated_at": v["updated_at"],
    }


#: what the approvals queue shows of a submitted version (schema ``ApprovalQueueItem``)
QUEUE_VERSION_FIELDS = ("version", "kind", "effective_from", "ends_at", "backdated", "committed_value", "etag",
                        "authors", "submitted_by", "submitted_at", "submission", "required_approvals", "approvals",
                        "missing_approvals")


def queue_item(row: Mapping[str, Any], approvals: Sequence[Mapping[str, Any]], derived: DerivedStatus,
               why_not: str | None) -> dict[str, Any]:
    """One entry of the approvals queue: the contract's summary (``q_*`` columns of
    ``repo.submitted_page``), the submitted version, and whether the caller can decide."""
    v = version(row, approvals)
    return {"contract": {"id": row["contract_id"], "name": row["q_name"], "advertiser_id": row["q_advertiser_id"],
                         "status": derived.status, "currency": row["q_currency"], "time_zone": row["q_time_zone"]},
            "version": {k: v[k] for k in QUEUE_VERSION_FIELDS}, "can_decide": why_not is None, "why_not": why_not}


def for_viewer(p: Principal, version_view: dict[str, Any]) -> dict[str, Any]:
    """The version as ``p`` may see it: the partner view for a partner user."""
    partner = partner_of(p)
    return version_view if partner is None else domain.partner_version(version_view, partner)


def diff(p: Principal, contract_id: str, va: Mapping[str, Any], vb: Mapping[str, Any]) -> dict[str, Any]:
    """What changed from version ``va`` to ``vb`` (of the terms the viewer may see)."""
    partner = partner_of(p)

    def side(v: Mapping[str, Any]) -> dict[str, Any]:
        terms = v["terms"] if partner is None else domain.partner_terms(v["terms"], partner)
        ends: datetime | None = v["ends_at"]
        return {"terms": terms, "effective_from": v["effective_from"].isoformat(),
                "ends_at": ends.isoformat() if ends else None}

    return {"contract_id": contract_id, "from_version": va["version"], "to_version": vb["version"],
            "changes": domain.diff(side(va), side(vb))}


def audit_entries(entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    return [e.as_json() for e in entries]


def party(row: Mapping[str, Any]) -> dict[str, Any]:
    """One registry entry (schema ``Party``): no staff name, so tenants read the same shape."""
    return {"type": row["party_type"], "id": row["party_id"], "name": row["display_name"],
            "updated_at": row["updated_at"]}
