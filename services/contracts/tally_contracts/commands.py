"""What a caller asks the contracts service to do, one frozen dataclass per step, and the
parsers that turn a request body into one.

Parsing is pure and never raises: what a body gets wrong travels in ``problems`` as
``(field, message)`` pairs, and the handler raises them (with the problems only the contract's
state reveals) at the point the step's rules call for — after the lookup (404) and the role
check (403), in one 422 naming every field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from tally_billing import bounds
from tally_billing.terms import ContractTerms, read_terms
from tally_kit.auth import Principal

from .repo import ListFilters

MAX_NAME = 200
MAX_TEXT = 2000
MAX_PARTNERS = 100
#: the kinds of party the registry names (``GET /parties?type=``, ``PUT /parties/{type}/{id}``)
PARTY_TYPES = ("advertiser", "partner")
#: the most ids one ``GET /parties`` looks up (a console page's worth)
MAX_PARTY_IDS = 100
#: a display name is shown beside ids in tables: C0, DEL and C1 control characters (newlines,
#: tabs, terminal escapes) have no place there (the rule ``tally_billing.bounds`` gives foreign ids)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Problem = tuple[str, str]


class Problems:
    """Collects every problem of a request body (and, in the handlers, of its meaning)."""

    def __init__(self, items: tuple[Problem, ...] | list[Problem] = ()) -> None:
        self.items: list[Problem] = list(items)

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def obj(self, raw: Any, allowed: set[str], required: frozenset[str] | set[str] = frozenset()) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            self.add("body", "must be a JSON object")
            return {}
        for k in sorted(set(raw) - allowed)[:20]:  # a body of a million unknown keys gets a short answer
            self.add(k[:100], "unknown field")
        for k in sorted(required - set(raw)):
            self.add(k, "is required")
        return raw

    def string(self, raw: Mapping[str, Any], key: str, *, required: bool = False, max_len: int = MAX_TEXT) -> str | None:
        v = raw.get(key)
        if v is None:
            if required and key in raw:
                self.add(key, "is required")
            return None
        if not isinstance(v, str) or not v.strip():
            self.add(key, "must be a non-empty string")
            return None
        if len(v) > max_len:
            self.add(key, f"must be at most {max_len} characters")
            return None
        return v.strip()

    def day(self, raw: Mapping[str, Any], key: str) -> date | None:
        v = raw.get(key)
        if v is None:
            return None
        try:
            if not isinstance(v, str) or len(v) != 10:
                raise ValueError
            d = date.fromisoformat(v)
        except ValueError:
            self.add(key, "must be a date YYYY-MM-DD")
            return None
        if not bounds.DATE_MIN <= d <= bounds.DATE_MAX:
            self.add(key, f"must be from {bounds.DATE_MIN.isoformat()} to {bounds.DATE_MAX.isoformat()}")
            return None
        return d

    def boolean(self, raw: Mapping[str, Any], key: str) -> bool | None:
        """The flag, or None when absent or not a boolean (the handler picks the default)."""
        v = raw.get(key)
        if v is None and key not in raw:
            return None
        if not isinstance(v, bool):
            self.add(key, "must be true or false")
            return None
        return v

    def terms(self, raw: Mapping[str, Any], key: str = "terms") -> ContractTerms | None:
        if key not in raw:
            return None
        terms, found = read_terms(raw[key])  # one pass: validating twice would double the CPU per request
        for p in found:
            self.add(key if p.path in ("", "$") else f"{key}.{p.path}", p.message)
        return terms

    def frozen(self) -> tuple[Problem, ...]:
        return tuple(self.items)


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, kw_only=True)
class Command:
    principal: Principal
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ContractCommand(Command):
    """A step on one contract."""

    contract_id: str


@dataclass(frozen=True, kw_only=True)
class VersionCommand(ContractCommand):
    """A step on one version of a contract."""

    version: int


@dataclass(frozen=True, kw_only=True)
class CreateContract(Command):
    name: str | None
    terms: ContractTerms | None
    partner_ids: tuple[str, ...]
    comment: str | None


@dataclass(frozen=True, kw_only=True)
class DraftAmendment(ContractCommand):
    terms: ContractTerms | None
    effective_from: date | None
    effective_from_given: bool
    backdated: bool | None
    comment: str | None


@dataclass(frozen=True, kw_only=True)
class EditDraft(VersionCommand):
    terms: ContractTerms | None
    effective_from: date | None
    backdated: bool | None
    comment: str | None
    if_match: str | None


@dataclass(frozen=True, kw_only=True)
class Submit(VersionCommand):
    if_match: str | None


@dataclass(frozen=True, kw_only=True)
class Withdraw(VersionCommand):
    """Withdraw a submitted version (its approvals are discarded)."""


@dataclass(frozen=True, kw_only=True)
class Approve(VersionCommand):
    comment: str | None
    role: str | None
    if_match: str | None


@dataclass(frozen=True, kw_only=True)
class Reject(VersionCommand):
    comment: str | None


@dataclass(frozen=True, kw_only=True)
class Renew(ContractCommand):
    apply_escalator: bool
    comment: str | None


@dataclass(frozen=True, kw_only=True)
class CancelAutoRenewal(ContractCommand):
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class Terminate(ContractCommand):
    effective_date: date | None
    reason: str | None


@dataclass(frozen=True)
class Tick:
    """One scheduler pass at ``now`` (the clock's when None)."""

    now: datetime | None = None


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class GetContract:
    principal: Principal
    contract_id: str


@dataclass(frozen=True)
class ListContracts:
    principal: Principal
    filters: ListFilters
    limit: int
    after: tuple[datetime, str] | None


@dataclass(frozen=True)
class ListVersions:
    principal: Principal
    contract_id: str


@dataclass(frozen=True)
class GetVersion:
    principal: Principal
    contract_id: str
    version: int


@dataclass(frozen=True)
class Diff:
    principal: Principal
    contract_id: str
    from_version: int
    to_version: int


@dataclass(frozen=True)
class ApprovalsQueue:
    """Submitted versions, oldest submission first: ``waiting_for`` ``me`` (the caller can still
    give a missing approval) or ``any``; ``after`` is the last item's (submitted_at, contract_id, version)."""

    principal: Principal
    waiting_for: str
    limit: int
    after: tuple[datetime, str, int] | None


@dataclass(frozen=True)
class AuditTrail:
    principal: Principal
    contract_id: str
    after_seq: int
    limit: int


@dataclass(frozen=True)
class GetParties:
    """The named parties among ``ids`` (of ``party_type``, or of both types when None)."""

    principal: Principal
    party_type: str | None
    ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class NameParty(Command):
    """Create or rename the registry entry of one party (admin only)."""

    party_type: str
    party_id: str
    name: str | None


# --------------------------------------------------------------------------- body parsers


def name_party(p: Principal, party_type: str, party_id: str, body: Any) -> NameParty:
    pr = Problems()
    raw = pr.obj(body, {"name"}, {"name"})
    given = raw.get("name")
    if isinstance(given, str) and _CONTROL_CHARS.search(given) is not None:  # before strip() drops trailing ones
        pr.add("name", "must not contain control characters (newline, tab, ...)")
        return NameParty(principal=p, problems=pr.frozen(), party_type=party_type, party_id=party_id, name=None)
    name = pr.string(raw, "name", max_len=MAX_NAME)
    return NameParty(principal=p, problems=pr.frozen(), party_type=party_type, party_id=party_id, name=name)


def party_query(p: Principal, query: Mapping[str, str]) -> GetParties | list[Problem]:
    """``GET /parties?type=&ids=a,b,c``: the query, or every problem of it (``query.<name>``)."""
    problems: list[Problem] = [(f"query.{k[:100]}", "unknown parameter") for k in sorted(set(query) - {"type", "ids"})]
    party_type = query.get("type")
    if party_type is not None and party_type not in PARTY_TYPES:
        problems.append(("query.type", f"must be one of {', '.join(PARTY_TYPES)}"))
    raw = query.get("ids")
    ids: list[str] = []
    if raw is None or raw == "":
        problems.append(("query.ids", f"is required: 1 to {MAX_PARTY_IDS} comma-separated ids"))
    else:
        parts = raw.split(",", MAX_PARTY_IDS)  # at most one part beyond the bound: a huge list is not split whole
        if len(parts) > MAX_PARTY_IDS:
            problems.append(("query.ids", f"must have at most {MAX_PARTY_IDS} ids"))
        else:
            for i, x in enumerate(parts):
                if (problem := bounds.id_problem(x)) is not None:
                    problems.append((f"query.ids[{i}]", problem))
            ids = list(dict.fromkeys(parts))
    if problems:
        return problems
    return GetParties(p, party_type, tuple(ids))


def create_contract(p: Principal, body: Any) -> CreateContract:
    pr = Problems()
    raw = pr.obj(body, {"name", "terms", "partner_ids", "comment"}, {"name", "terms"})
    name = pr.string(raw, "name", max_len=MAX_NAME)
    comment = pr.string(raw, "comment")
    partners_raw = raw.get("partner_ids", [])
    if not isinstance(partners_raw, list):
        pr.add("partner_ids", "must be a list of partner ids")
        partners_raw = []
    elif len(partners_raw) > MAX_PARTNERS:
        pr.add("partner_ids", f"must have at most {MAX_PARTNERS} partner ids")
        partners_raw = []
    for i, x in enumerate(partners_raw):
        if (problem := bounds.id_problem(x)) is not None:
            pr.add(f"partner_ids[{i}]", problem)
    terms = pr.terms(raw)
    return CreateContract(principal=p, problems=pr.frozen(), name=name, terms=terms,
                          partner_ids=tuple(partners_raw), comment=comment)


def draft_amendment(p: Principal, contract_id: str, body: Any) -> DraftAmendment:
    pr = Problems()
    raw = pr.obj(body, {"terms", "effective_from", "backdated", "comment"}, {"terms"})
    terms = pr.terms(raw)
    eff_day = pr.day(raw, "effective_from")
    flag = pr.boolean(raw, "backdated")
    comment = pr.string(raw, "comment")
    return DraftAmendment(principal=p, problems=pr.frozen(), contract_id=contract_id, terms=terms,
                          effective_from=eff_day, effective_from_given="effective_from" in raw, backdated=flag,
                          comment=comment)


def edit_draft(p: Principal, contract_id: str, version: int, body: Any, if_match: str | None) -> EditDraft:
    pr = Problems()
    raw = pr.obj(body, {"terms", "effective_from", "backdated", "comment"}, {"terms"})
    terms = pr.terms(raw)
    eff_day = pr.day(raw, "effective_from")
    flag = pr.boolean(raw, "backdated")
    comment = pr.string(raw, "comment")
    return EditDraft(principal=p, problems=pr.frozen(), contract_id=contract_id, version=version, terms=terms,
                     effective_from=eff_day, backdated=flag, comment=comment, if_match=if_match)


def approve(p: Principal, contract_id: str, version: int, body: Any, if_match: str | None) -> Approve:
    pr = Problems()
    raw = pr.obj(body if body is not None else {}, {"comment", "role"})
    comment = pr.string(raw, "comment")
    asked = pr.string(raw, "role", max_len=40)
    return Approve(principal=p, problems=pr.frozen(), contract_id=contract_id, version=version, comment=comment,
                   role=asked, if_match=if_match)


def reject(p: Principal, contract_id: str, version: int, body: Any) -> Reject:
    pr = Problems()
    raw = pr.obj(body, {"comment"}, {"comment"})
    comment = pr.string(raw, "comment", required=True)
    return Reject(principal=p, problems=pr.frozen(), contract_id=contract_id, version=version, comment=comment)


def renew(p: Principal, contract_id: str, body: Any) -> Renew:
    pr = Problems()
    raw = pr.obj(body if body is not None else {}, {"apply_escalator", "comment"})
    flag = pr.boolean(raw, "apply_escalator")
    comment = pr.string(raw, "comment")
    return Renew(principal=p, problems=pr.frozen(), contract_id=contract_id,
                 apply_escalator=True if flag is None else flag, comment=comment)


def cancel_auto_renewal(p: Principal, contract_id: str, body: Any) -> CancelAutoRenewal:
    pr = Problems()
    raw = pr.obj(body if body is not None else {}, {"reason"})
    reason = pr.string(raw, "reason")
    return CancelAutoRenewal(principal=p, problems=pr.frozen(), contract_id=contract_id, reason=reason)


def terminate(p: Principal, contract_id: str, body: Any) -> Terminate:
    pr = Problems()
    raw = pr.obj(body, {"effective_date", "reason"}, {"effective_date", "reason"})
    day = pr.day(raw, "effective_date")
    reason = pr.string(raw, "reason", required=True)
    return Terminate(principal=p, problems=pr.frozen(), contract_id=contract_id, effective_date=day, reason=reason)
