"""The contracts service's pure rules: derived status, the approval policy, renewals, diffs.

No I/O here: everything takes the clock's ``now`` and plain values, so the rules are unit
tested without a database. The terms model itself lives in ``tally_billing.terms``.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from tally_billing.bounds import DATE_MAX
from tally_billing.periods import DEFAULT_GRACE, PeriodKind, flight_end_instant, local_midnight, period_containing
from tally_billing.terms import ContractTerms, committed_value, escalate, parse_terms, terms_to_json, validate_terms

STATUSES = ("draft", "pending_approval", "scheduled", "active", "terminating", "ended")
VERSION_STATES = ("draft", "submitted", "approved", "rejected", "withdrawn")
VERSION_KINDS = ("initial", "amendment", "renewal", "termination")
EDITABLE_STATES = frozenset({"draft", "withdrawn"})
OPEN_STATES = frozenset({"draft", "submitted", "withdrawn"})
DEFAULT_RENEWAL_TERM_MONTHS = 12


@dataclass(frozen=True)
class VersionFacts:
    """What status derivation needs to know about one version."""

    version: int
    kind: str
    state: str
    effective_from: datetime
    ends_at: datetime | None


@dataclass(frozen=True)
class DerivedStatus:
    status: str
    current_version: int | None  # the approved version in force at ``now``, if any


def pricing_versions(versions: Iterable[VersionFacts]) -> list[VersionFacts]:
    """Approved versions that carry terms (a termination version only ends the contract)."""
    return sorted((v for v in versions if v.state == "approved" and v.kind != "termination"),
                  key=lambda v: (v.effective_from, v.version))


def derive_status(versions: Sequence[VersionFacts], terminated_at: datetime | None, now: datetime) -> DerivedStatus:
    """The contract's status at ``now``, from its versions only (never stored by hand).

    ended: an approved termination took effect, or the term of the version in force ran out
    with nothing after it; terminating: a termination is approved for a future instant;
    scheduled: approved, but the first version starts later; active: a version is in force;
    pending_approval: nothing approved yet and a version is submitted; draft otherwise.
    """
    approved = pricing_versions(versions)
    if not approved:
        if any(v.state == "submitted" for v in versions):
            return DerivedStatus("pending_approval", None)
        return DerivedStatus("draft", None)
    if terminated_at is not None and now >= terminated_at:
        return DerivedStatus("ended", None)
    started = [v for v in approved if v.effective_from <= now]
    if not started:
        return DerivedStatus("scheduled", None)
    in_force = started[-1]
    later = [v for v in approved if v.effective_from > now]
    if in_force.ends_at is not None and now >= in_force.ends_at and not later:
        return DerivedStatus("ended", None)
    if in_force.ends_at is not None and now >= in_force.ends_at:
        # between a term's end and a later version's start: nothing prices events yet
        return DerivedStatus("scheduled", None)
    return DerivedStatus("terminating" if terminated_at is not None else "active", in_force.version)


# --------------------------------------------------------------------------- time helpers


def term_end(terms: ContractTerms) -> datetime | None:
    """Exclusive end of the term: one microsecond after 23:59:59.999999 local on flight_end."""
    c = terms.common
    if c.flight_end is None:
        return None
    return flight_end_instant(c.flight_end, c.time_zone) + timedelta(microseconds=1)


def day_start(day: date, tz: str) -> datetime:
    """Local midnight of ``day`` in ``tz``, as an aware UTC instant."""
    return local_midnight(day, tz)


def open_period_start(now: datetime, tz: str, kind: PeriodKind, grace: timedelta = DEFAULT_GRACE) -> datetime:
    """Start of the earliest billing period still open at ``now`` (a period closes at end + grace)."""
    return period_containing(now - grace, tz, kind).start


def notice_deadline(end: datetime, notice_days: int) -> datetime:
    """The last instant auto-renewal can be cancelled (exclusive): ``notice_days`` before term end.
    A notice longer than the calendar (stored before the bounds existed) saturates at the first
    instant: the deadline has always passed, instead of an overflow on every read."""
    try:
        return end - timedelta(days=notice_days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def earliest_termination(now: datetime, notice_days: int) -> datetime:
    """``now`` plus the notice period; saturates at the last instant (never an overflow)."""
    try:
        return now + timedelta(days=notice_days)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def renewal_terms(terms: ContractTerms, *, apply_escalator: bool = True) -> ContractTerms:
    """Terms for the next term: the flight moves to the day after the current flight end, for
    ``renewal_term_months`` (12 by default), with the escalator applied to every rate."""
    c = terms.common
    if c.flight_end is None:
        raise ValueError("an evergreen contract (no flight_end) has no next term")
    months = c.renewal_term_months or DEFAULT_RENEWAL_TERM_MONTHS
    start = c.flight_end + timedelta(days=1)
    if start > DATE_MAX:
        raise RenewalImpossible([f"common.flight_end: the next term would start after {DATE_MAX.isoformat()}"])
    end = _add_months(start, months) - timedelta(days=1)
    raised = escalate(terms, c.escalator_pct) if apply_escalator and c.escalator_pct else terms
    renewed = replace(raised, common=replace(raised.common, flight_start=start, flight_end=end))
    # the next term must itself be valid terms (dates and escalated prices within their bounds):
    # a stored version that no longer parses would break every read of the contract
    problems = validate_terms(terms_to_json(renewed))
    if problems:
        raise RenewalImpossible([str(p) for p in problems])
    return renewed


class RenewalImpossible(ValueError):
    """The next term would break the terms' bounds (past the last date, prices too high)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the contract cannot be renewed: " + "; ".join(problems))


def terms_json(terms: ContractTerms) -> dict[str, Any]:
    """The billing library's JSON, normalised through a JSON round trip (what jsonb stores)."""
    return dict(json.loads(json.dumps(terms_to_json(terms))))


def parse_stored(raw: Mapping[str, Any]) -> ContractTerms:
    return parse_terms(raw)


def committed(terms: ContractTerms) -> Decimal | None:
    return committed_value(terms)


# --------------------------------------------------------------------------- approval policy


@dataclass(frozen=True)
class PolicyRule:
    """Requirements that apply when every condition given matches (absent = any)."""

    require: Mapping[str, int]
    contract_type: str | None = None
    kind: str | None = None
    currency: str | None = None
    backdated: bool | None = None
    #: matches when the committed value is above this (an unbounded contract is above all)
    committed_value_over: Decimal | None = None

    def matches(self, ctx: ApprovalContext) -> bool:
        if self.contract_type is not None and self.contract_type != ctx.contract_type:
            return False
        if self.kind is not None and self.kind != ctx.kind:
            return False
        if self.currency is not None and self.currency != ctx.currency:
            return False
        if self.backdated is not None and self.backdated != ctx.backdated:
            return False
        if self.committed_value_over is not None:
            return ctx.committed_value is None or ctx.committed_value > self.committed_value_over
        return True


@dataclass(frozen=True)
class ApprovalContext:
    contract_type: str
    kind: str
    currency: str
    committed_value: Decimal | None
    backdated: bool


@dataclass(frozen=True)
class ApprovalPolicy:
    """Every matching rule contributes; per role the largest count wins. A backdated version
    always needs a ``finance`` approval on top (docs/DOMAIN.md), whatever the configured rules say."""

    rules: tuple[PolicyRule, ...] = field(default_factory=tuple)

    def required(self, ctx: ApprovalContext) -> dict[str, int]:
        need: dict[str, int] = {}
        for rule in self.rules:
            if rule.matches(ctx):
                for role, n in rule.require.items():
                    need[role] = max(need.get(role, 0), n)
        if ctx.backdated:
            need["finance"] = max(need.get("finance", 0), 1)
        if not need:
            need["approver"] = 1  # nothing is ever approved by nobody
        return dict(sorted(need.items()))

    @property
    def approving_roles(self) -> frozenset[str]:
        roles = {"finance"}
        for rule in self.rules:
            roles |= set(rule.require)
        return frozenset(roles)


DEFAULT_POLICY_JSON: dict[str, Any] = {
    "rules": [
        {"require": {"approver": 1}},
        {"when": {"committed_value_over": "100000"}, "require": {"approver": 1, "finance": 1}},
        {"when": {"kind": "termination"}, "require": {"approver": 1}},
    ]
}

_WHEN_KEYS = {"contract_type", "kind", "currency", "backdated", "committed_value_over"}
APPROVER_ROLES = frozenset({"approver", "finance", "admin"})


class PolicyInvalid(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_policy(raw: Any) -> ApprovalPolicy:
    """Parse ``{"rules": [{"when": {...}, "require": {"role": n}}, ...]}``, reporting every problem."""
    problems: list[str] = []
    if not isinstance(raw, Mapping) or not isinstance(raw.get("rules"), list):
        raise PolicyInvalid(["policy must be an object with a list 'rules'"])
    rules: list[PolicyRule] = []
    for i, r in enumerate(raw["rules"]):
        p = f"rules[{i}]"
        if not isinstance(r, Mapping):
            problems.append(f"{p}: must be an object")
            continue
        when = r.get("when", {})
        require = r.get("require")
        if not isinstance(when, Mapping) or set(when) - _WHEN_KEYS:
            problems.append(f"{p}.when: must be an object with keys among {sorted(_WHEN_KEYS)}")
            continue
        if not isinstance(require, Mapping) or not require:
            problems.append(f"{p}.require: must be a non-empty object of role -> count")
            continue
        bad_roles = [k for k, n in require.items()
                     if k not in APPROVER_ROLES or isinstance(n, bool) or not isinstance(n, int) or n < 1]
        if bad_roles:
            problems.append(f"{p}.require: roles must be among {sorted(APPROVER_ROLES)} with counts ≥ 1 ({bad_roles})")
            continue
        over = when.get("committed_value_over")
        threshold: Decimal | None = None
        if over is not None:
            try:
                threshold = Decimal(str(over)) if isinstance(over, str) else None
            except InvalidOperation:
                threshold = None
            if threshold is None:
                problems.append(f"{p}.when.committed_value_over: must be a decimal string")
                continue
        rules.append(PolicyRule(require=dict(require), contract_type=when.get("contract_type"), kind=when.get("kind"),
                                currency=when.get("currency"), backdated=when.get("backdated"),
                                committed_value_over=threshold))
    if problems:
        raise PolicyInvalid(problems)
    return ApprovalPolicy(tuple(rules))


def parse_policy_text(text: str) -> ApprovalPolicy:
    return parse_policy(json.loads(text))


def remaining(required: Mapping[str, int], given_roles: Iterable[str]) -> dict[str, int]:
    """Approvals still missing per role."""
    left = dict(required)
    for role in given_roles:
        if left.get(role, 0) > 0:
            left[role] -= 1
    return {r: n for r, n in left.items() if n > 0}


def pick_role(caller_roles: Iterable[str], missing: Mapping[str, int], asked: str | None) -> str | None:
    """The role an approval counts for: the one asked for, or the first missing role the
    caller holds (sorted, so the choice is deterministic). None: the caller cannot help."""
    held = set(caller_roles)
    if asked is not None:
        return asked if asked in held and missing.get(asked, 0) > 0 else None
    for role in sorted(missing):
        if role in held:
            return role
    return None


# --------------------------------------------------------------------------- diff


def diff(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    """Field-by-field differences between two JSON values: ``[{"path", "from", "to"}]``,
    paths like ``cpm.rate_card.bands[1].rate_cpm``; lists are compared index by index."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[dict[str, Any]] = []
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append({"path": sub, "from": None, "to": b[k], "change": "added"})
            elif k not in b:
                out.append({"path": sub, "from": a[k], "to": None, "change": "removed"})
            else:
                out.extend(diff(a[k], b[k], sub))
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = []
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(a):
                out.append({"path": sub, "from": None, "to": b[i], "change": "added"})
            elif i >= len(b):
                out.append({"path": sub, "from": a[i], "to": None, "change": "removed"})
            else:
                out.extend(diff(a[i], b[i], sub))
        return out
    if a != b or type(a) is not type(b):
        return [{"path": path or "$", "from": a, "to": b, "change": "changed"}]
    return []


# --------------------------------------------------------------------------- partner view

#: what a partner sees of the common terms: when and in what the contract runs, and on which
#: campaigns — not the advertiser's commercial terms (payment, PO, renewal, committed value)
PARTNER_COMMON_FIELDS = ("currency", "time_zone", "billing_period", "flight_start", "flight_end", "campaign_ids")


def partner_terms(terms: Mapping[str, Any], partner_id: str) -> dict[str, Any]:
    """The terms as the partner ``partner_id`` may read them (schema ``PartnerTerms``): the
    flight, currency and campaigns, its payouts (without the advertiser price, which would give
    away the platform's margin), the attribution windows, the per-partner caps and its own
    overrides — never other partners' overrides. A CPM contract pays partners nothing here, so
    its rate card is left out too."""
    common = terms.get("common") or {}
    out: dict[str, Any] = {"view": "partner", "contract_type": terms.get("contract_type"),
                           "common": {k: common.get(k) for k in PARTNER_COMMON_FIELDS}, "cpa": None}
    cpa = terms.get("cpa")
    if isinstance(cpa, Mapping):
        caps = cpa.get("caps") or {}
        out["cpa"] = {
            "payouts": [{"event_type": row.get("event_type"), "partner_payout": row.get("partner_payout"),
                         "tiers": [{"from_conversions": t.get("from_conversions"), "partner_payout": t.get("partner_payout")}
                                   for t in row.get("tiers") or []]}
                        for row in cpa.get("payouts") or []],
            "partner_overrides": [dict(o) for o in cpa.get("partner_overrides") or [] if o.get("partner_id") == partner_id],
            "attribution": cpa.get("attribution"),
            "caps": {"per_partner": caps.get("per_partner")},
        }
    return out


#: version fields a partner reads; the rest (authors, approvals, comments, committed value,
#: the approval policy's requirements) are the platform's internal record and staff names
PARTNER_VERSION_FIELDS = ("contract_id", "version", "kind", "state", "effective_from", "ends_at", "etag", "decided_at")


def partner_version(version: Mapping[str, Any], partner_id: str) -> dict[str, Any]:
    """A version as a partner reads it (schema ``PartnerVersion``)."""
    out = {k: version.get(k) for k in PARTNER_VERSION_FIELDS}
    out["view"] = "partner"
    out["terms"] = partner_terms(version.get("terms") or {}, partner_id)
    return out


# --------------------------------------------------------------------------- errors the handlers raise
# Plain exceptions, no HTTP: ``api.py`` maps each to its problem+json answer (``api.problem``).


class ContractError(Exception):
    """A request the rules refuse. ``extra`` are facts the answer carries (e.g. ``notice_deadline``)."""

    def __init__(self, detail: str, **extra: Any) -> None:
        self.detail = detail
        self.extra = extra
        super().__init__(detail)


class NotFound(ContractError):
    """The contract or version does not exist, or lies outside the caller's scope (never told apart)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} not found")


class Forbidden(ContractError):
    """The caller's roles do not allow the step."""


class MakerChecker(Forbidden):
    """The caller authored or submitted the version it tries to decide on."""


class Conflict(ContractError):
    """The step does not fit the contract's current state."""


class OpenVersionExists(Exception):
    """The database refused a second open (draft or submitted) version of one contract."""


class Invalid(ContractError):
    """Fields of the request that are wrong, all of them at once: ``(field, message)`` pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("the request has invalid fields")


class PreconditionRequired(ContractError):
    """An edit came without the If-Match the version needs; ``etag`` is the current one."""

    def __init__(self, detail: str, etag: str) -> None:
        self.etag = etag
        super().__init__(detail)


class PreconditionFailed(ContractError):
    """The If-Match names a version content that changed since; ``etag`` is the current one."""

    def __init__(self, detail: str, etag: str) -> None:
        self.etag = etag
        super().__init__(detail)


def require_role(roles: Iterable[str], *allowed: str) -> None:
    """Forbidden unless one of ``roles`` is among ``allowed`` (the message of ``Principal.require``)."""
    if not set(roles) & set(allowed):
        raise Forbidden(f"requires one of the roles: {', '.join(sorted(allowed))}")
