"""What the pacing tables hold, and the steps from an input record to table values and alerts.

Pure: no faust, no Kafka. The agents in ``tally_pacing.app`` decode, call these, and write
what they return. Every value is an *absolute* total keyed by its natural key, so a redelivered
record rewrites the same value (at-least-once is enough):

* ``hourly[<contract>/<period>/<hour>]`` — the period's cumulative amount and billable count
  as of the newest running total whose ``latest_event_time`` falls in that UTC hour (an update
  with an older ``updated_at`` than the stored one is stale and ignored);
* ``periods[<contract>/<period>]`` — the latest running total's summary, the first and last
  hour with data, and the alert state (last state told to ad servers, and how many changes);
* ``budget[<contract>/<period>]`` — the budget-alert thresholds metering reported;
* ``flights[<contract>]`` — the contract's flight from ``contracts.terms``.

Table values are JSON (decimal strings, integer microseconds), never floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tally_billing.money import AMOUNT_SCALE, format_decimal
from tally_billing.pacing import (
    Curve,
    HourTotal,
    Pacing,
    PacingState,
    Window,
    alert_state,
    hour_of,
    pace,
    pacing_window,
)
from tally_billing.periods import flight_end_instant, flight_start_instant
from tally_billing.usage import from_micros, to_micros
from tally_billing.versions import InvalidVersions, versions_from_record
from tally_streams.avro import plain_decimal

#: bounds on identifiers read from the input topics (a longer one is a bad record)
ID_LEN_MAX = 200


class InvalidRecord(ValueError):
    """A record that decoded but cannot be used (it goes to the dead-letter topic with this reason)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{field}: {reason}")


def _id(rec: Mapping[str, Any], field: str) -> str:
    v = rec.get(field)
    if not isinstance(v, str) or not v or len(v) > ID_LEN_MAX:
        raise InvalidRecord(field, f"must be a non-empty string of at most {ID_LEN_MAX} characters")
    return v


def _instant(rec: Mapping[str, Any], field: str, *, optional: bool = False) -> datetime | None:
    v = rec.get(field)
    if v is None and optional:
        return None
    if not isinstance(v, datetime) or v.tzinfo is None:
        raise InvalidRecord(field, "must be an instant")
    return v.astimezone(UTC)


def _amount(rec: Mapping[str, Any], field: str, *, optional: bool = False) -> Decimal | None:
    v = rec.get(field)
    if v is None and optional:
        return None
    if not isinstance(v, Decimal) or not v.is_finite():
        raise InvalidRecord(field, "must be an exact decimal")
    return v


def _dec(v: Decimal | None) -> str | None:
    return None if v is None else format_decimal(v, trailing_zeros=False)


def _undec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


# --------------------------------------------------------------------------- running totals


@dataclass(frozen=True)
class TotalUpdate:
    """A ``billing.running_totals`` record, typed at the boundary."""

    total_id: str
    contract_id: str
    advertiser_id: str
    contract_type: str
    currency: str
    time_zone: str
    period_kind: str
    period_key: str
    period_start: datetime
    period_end: datetime
    status: str
    amount: Decimal
    cap_per_period: Decimal | None
    cap_total: Decimal | None
    minimum_commitment: Decimal | None
    billable: int
    over_delivery: int
    latest_event_time: datetime | None
    updated_at: datetime
    #: the UTC hour this total describes: that of its newest event (else of its computation);
    #: derived, never given (``dataclasses.replace`` cannot carry a stale one)
    hour: datetime = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hour", hour_of(self.latest_event_time or self.updated_at))

    @classmethod
    def from_plain(cls, rec: Mapping[str, Any]) -> TotalUpdate:
        """``from_record`` for a record of ``AvroCodec.decode_plain`` (instants as microseconds,
        decimals as their unscaled bytes at the wire's scale): the same update, the same
        refusals — only the fields pacing reads are converted (issue 17: the full decode and its
        datetimes and decimals for every line were a sixth of the worker's CPU)."""
        counts = rec.get("counts") or {}
        if not isinstance(counts, Mapping):
            raise InvalidRecord("counts", "must be a map of counts")
        contract_type = str(rec.get("contract_type"))
        billable_key = "conversions_attributed" if contract_type == "cpa" else "billable"
        start_us, end_us = int(rec["period_start"]), int(rec["period_end"])
        if end_us <= start_us:
            raise InvalidRecord("period_end", "must be after period_start")
        updated_us = int(rec["updated_at"])
        latest_us = rec.get("latest_event_time")

        def amount(name: str) -> Decimal | None:
            raw = rec.get(name)
            return None if raw is None else plain_decimal(raw, AMOUNT_SCALE)

        total = amount("amount_exact")
        assert total is not None  # not nullable in the schema
        return cls(
            total_id=_id(rec, "total_id"), contract_id=_id(rec, "contract_id"), advertiser_id=_id(rec, "advertiser_id"),
            contract_type=contract_type, currency=_id(rec, "currency"), time_zone=_id(rec, "time_zone"),
            period_kind=_id(rec, "period_kind"), period_key=_id(rec, "period_key"), period_start=from_micros(start_us),
            period_end=from_micros(end_us), status=str(rec.get("status")), amount=total,
            cap_per_period=amount("budget_cap_per_period"), cap_total=amount("budget_cap_total"),
            minimum_commitment=amount("minimum_commitment"),
            billable=int(counts.get(billable_key, 0)), over_delivery=int(counts.get("over_delivery", 0)),
            latest_event_time=None if latest_us is None else from_micros(int(latest_us)),
            updated_at=from_micros(updated_us),
        )

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> TotalUpdate:
        counts = rec.get("counts") or {}
        if not isinstance(counts, Mapping):
            raise InvalidRecord("counts", "must be a map of counts")
        contract_type = str(rec.get("contract_type"))
        billable_key = "conversions_attributed" if contract_type == "cpa" else "billable"
        start, end = _instant(rec, "period_start"), _instant(rec, "period_end")
        assert start is not None and end is not None
        if end <= start:
            raise InvalidRecord("period_end", "must be after period_start")
        updated_at = _instant(rec, "updated_at")
        amount = _amount(rec, "amount_exact")
        assert updated_at is not None and amount is not None
        return cls(
            total_id=_id(rec, "total_id"), contract_id=_id(rec, "contract_id"), advertiser_id=_id(rec, "advertiser_id"),
            contract_type=contract_type, currency=_id(rec, "currency"), time_zone=_id(rec, "time_zone"),
            period_kind=_id(rec, "period_kind"), period_key=_id(rec, "period_key"), period_start=start, period_end=end,
            status=str(rec.get("status")), amount=amount,
            cap_per_period=_amount(rec, "budget_cap_per_period", optional=True),
            cap_total=_amount(rec, "budget_cap_total", optional=True),
            minimum_commitment=_amount(rec, "minimum_commitment", optional=True),
            billable=int(counts.get(billable_key, 0)), over_delivery=int(counts.get("over_delivery", 0)),
            latest_event_time=_instant(rec, "latest_event_time", optional=True), updated_at=updated_at,
        )


def hour_key(total_id: str, hour: datetime) -> str:
    """``<total>/<YYYY-MM-DDTHH>`` (UTC; formatted by hand: ``strftime`` costs more, once per record)."""
    return f"{total_id}/{hour.year:04d}-{hour.month:02d}-{hour.day:02d}T{hour.hour:02d}"


def hour_value(u: TotalUpdate | PeriodState) -> dict[str, Any]:
    return {"amount": _dec(u.amount), "billable": u.billable, "updated_at_us": to_micros(u.updated_at)}


def newer(stored: Mapping[str, Any] | None, u: TotalUpdate | Mapping[str, Any]) -> bool:
    """Whether ``u`` (an update, or an ``hourly`` value) may overwrite ``stored`` (same or newer
    computation: a replay rewrites the same value)."""
    at = int(u["updated_at_us"]) if isinstance(u, Mapping) else to_micros(u.updated_at)
    return stored is None or int(stored["updated_at_us"]) <= at


def hour_total(value: Mapping[str, Any]) -> HourTotal:
    return HourTotal(Decimal(value["amount"]), int(value["billable"]))


@dataclass(frozen=True)
class PeriodState:
    """The ``periods`` table value."""

    total_id: str
    contract_id: str
    advertiser_id: str
    contract_type: str
    currency: str
    time_zone: str
    period_kind: str
    period_key: str
    period_start: datetime
    period_end: datetime
    status: str
    amount: Decimal
    cap_per_period: Decimal | None
    cap_total: Decimal | None
    minimum_commitment: Decimal | None
    billable: int
    over_delivery: int
    latest_event_time: datetime | None
    updated_at: datetime
    first_hour: datetime
    last_hour: datetime
    alert_state: PacingState = PacingState.ON_PACE
    alert_seq: int = 0
    #: ``updated_at`` of the last total the alert state was evaluated at
    evaluated_at: datetime | None = None

    @property
    def hour(self) -> datetime:
        """The UTC hour of the total this state holds (``TotalUpdate.hour``): the ``hourly`` value
        of that hour is this state's own amount and count (it is the newest total of all)."""
        return hour_of(self.latest_event_time or self.updated_at)

    @property
    def budget(self) -> Decimal | None:
        """What the period should spend: its budget cap, else its minimum commitment."""
        return self.cap_per_period if self.cap_per_period is not None else self.minimum_commitment

    def to_json(self) -> dict[str, Any]:
        return {
            "total_id": self.total_id, "contract_id": self.contract_id, "advertiser_id": self.advertiser_id,
            "contract_type": self.contract_type, "currency": self.currency, "time_zone": self.time_zone,
            "period_kind": self.period_kind, "period_key": self.period_key,
            "period_start_us": to_micros(self.period_start), "period_end_us": to_micros(self.period_end),
            "status": self.status, "amount": _dec(self.amount), "cap_per_period": _dec(self.cap_per_period),
            "cap_total": _dec(self.cap_total), "minimum_commitment": _dec(self.minimum_commitment),
            "billable": self.billable, "over_delivery": self.over_delivery,
            "latest_event_time_us": None if self.latest_event_time is None else to_micros(self.latest_event_time),
            "updated_at_us": to_micros(self.updated_at), "first_hour_us": to_micros(self.first_hour),
            "last_hour_us": to_micros(self.last_hour), "alert_state": str(self.alert_state), "alert_seq": self.alert_seq,
            "evaluated_at_us": None if self.evaluated_at is None else to_micros(self.evaluated_at),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PeriodState:
        let = d.get("latest_event_time_us")
        amount = _undec(d["amount"])
        assert amount is not None
        return cls(
            total_id=d["total_id"], contract_id=d["contract_id"], advertiser_id=d["advertiser_id"],
            contract_type=d["contract_type"], currency=d["currency"], time_zone=d["time_zone"],
            period_kind=d["period_kind"], period_key=d["period_key"], period_start=from_micros(d["period_start_us"]),
            period_end=from_micros(d["period_end_us"]), status=d["status"], amount=amount,
            cap_per_period=_undec(d.get("cap_per_period")), cap_total=_undec(d.get("cap_total")),
            minimum_commitment=_undec(d.get("minimum_commitment")), billable=int(d["billable"]),
            over_delivery=int(d["over_delivery"]), latest_event_time=None if let is None else from_micros(let),
            updated_at=from_micros(d["updated_at_us"]), first_hour=from_micros(d["first_hour_us"]),
            last_hour=from_micros(d["last_hour_us"]), alert_state=PacingState(d.get("alert_state", "on_pace")),
            alert_seq=int(d.get("alert_seq", 0)),
            evaluated_at=None if d.get("evaluated_at_us") is None else from_micros(d["evaluated_at_us"]),
        )


def apply_total(prev: PeriodState | None, u: TotalUpdate) -> PeriodState:
    """The period's state after ``u``: its totals when ``u`` is not older than what is held, and
    the hour range widened either way; the alert state is carried."""
    hour = u.hour
    if prev is not None and to_micros(prev.updated_at) > to_micros(u.updated_at):
        return replace(prev, first_hour=min(prev.first_hour, hour), last_hour=max(prev.last_hour, hour))
    return PeriodState(
        total_id=u.total_id, contract_id=u.contract_id, advertiser_id=u.advertiser_id, contract_type=u.contract_type,
        currency=u.currency, time_zone=u.time_zone, period_kind=u.period_kind, period_key=u.period_key,
        period_start=u.period_start, period_end=u.period_end, status=u.status, amount=u.amount,
        cap_per_period=u.cap_per_period, cap_total=u.cap_total, minimum_commitment=u.minimum_commitment,
        billable=u.billable, over_delivery=u.over_delivery, latest_event_time=u.latest_event_time,
        updated_at=u.updated_at,
        first_hour=hour if prev is None else min(prev.first_hour, hour),
        last_hour=hour if prev is None else max(prev.last_hour, hour),
        alert_state=PacingState.ON_PACE if prev is None else prev.alert_state,
        alert_seq=0 if prev is None else prev.alert_seq,
        evaluated_at=None if prev is None else prev.evaluated_at,
    )


# --------------------------------------------------------------------------- flights (contracts.terms)


@dataclass(frozen=True)
class Flight:
    start: datetime
    #: last instant of the flight (23:59:59.999999 local), or the termination; None = open-ended
    end: datetime | None
    revision: int
    #: a CPA contract's amount cap per period (``caps.contract.max_amount_per_period`` of the
    #: version effective last): what its periods are paced against (running totals carry CPM caps only)
    cpa_amount_cap: Decimal | None = None

    def to_json(self) -> dict[str, Any]:
        return {"start_us": to_micros(self.start), "end_us": None if self.end is None else to_micros(self.end),
                "revision": self.revision, "cpa_amount_cap": _dec(self.cpa_amount_cap)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Flight:
        return cls(from_micros(d["start_us"]), None if d.get("end_us") is None else from_micros(d["end_us"]),
                   int(d["revision"]), _undec(d.get("cpa_amount_cap")))


def flight_from_terms(rec: Mapping[str, Any]) -> Flight:
    """A contract's flight from its ``contracts.terms`` record: from the earliest version's flight
    start to the flight end of the version effective last (cut by a termination)."""
    if not rec.get("versions"):
        raise InvalidRecord("versions", "a contract without an approved version has no flight")
    try:
        versions = versions_from_record(rec)  # the one decoder of contracts.terms
    except (InvalidVersions, KeyError, TypeError) as exc:
        raise InvalidRecord("versions", str(exc)) from None
    if not versions:
        raise InvalidRecord("terminated_at", "the contract was terminated before any version took effect")
    parsed = [(v.effective_from, v.terms) for v in versions]
    start = min(flight_start_instant(t.common.flight_start, t.common.time_zone) for _, t in parsed)
    last_terms = max(parsed, key=lambda p: p[0])[1]
    last = last_terms.common
    end = None if last.flight_end is None else flight_end_instant(last.flight_end, last.time_zone)
    cpa_cap = None if last_terms.cpa is None else last_terms.cpa.caps.contract.max_amount_per_period
    terminated = rec.get("terminated_at")
    if isinstance(terminated, datetime):
        cut = from_micros(to_micros(terminated) - 1)
        end = cut if end is None else min(end, cut)
    return Flight(start, end, int(rec.get("revision") or 0), cpa_cap)


# --------------------------------------------------------------------------- pacing and alerts


@dataclass(frozen=True)
class PacingRules:
    curve: Curve
    tolerance_pct: Decimal
    under_alert_pct: Decimal
    alert_min_elapsed_pct: Decimal


def window_of(p: PeriodState, flight: Flight | None) -> Window | None:
    if flight is None:
        return Window(p.period_start, p.period_end)
    return pacing_window(p.period_start, p.period_end, flight_start=flight.start, flight_end=flight.end)


def caps_of(p: PeriodState, flight: Flight | None) -> tuple[Decimal | None, Decimal | None]:
    """(budget, cap) period ``p`` is paced against: the budget cap per period of its running
    total — for a CPA contract, whose totals carry none, the amount cap per period of its terms —
    and as the budget without a cap the minimum commitment."""
    cap = p.cap_per_period
    if cap is None and p.contract_type == "cpa" and flight is not None:
        cap = flight.cpa_amount_cap
    return (cap if cap is not None else p.minimum_commitment), cap


def evaluate(p: PeriodState, flight: Flight | None, as_of: datetime, rules: PacingRules) -> Pacing | None:
    """The pacing of period ``p`` at ``as_of``; None when the flight misses the period."""
    w = window_of(p, flight)
    if w is None:
        return None
    budget, cap = caps_of(p, flight)
    return pace(spend=p.amount, as_of=as_of, window=w, budget=budget, cap=cap, curve=rules.curve,
                tolerance_pct=rules.tolerance_pct)


def alert_due(p: PeriodState, at: datetime, interval_s: int, flight: Flight | None = None) -> bool:
    """Whether the alert state of ``p`` is evaluated for a total computed at ``at``: at most once
    per ``interval_s`` of ``updated_at`` per period (pacing moves slowly; the arithmetic is not
    free at thousands of updates per second), and never without a budget (nothing to alert on)."""
    if caps_of(p, flight)[0] is None:
        return False
    return p.evaluated_at is None or to_micros(at) - to_micros(p.evaluated_at) >= interval_s * 1_000_000


def next_alert(p: PeriodState, pacing: Pacing | None, rules: PacingRules, now: datetime
               ) -> tuple[PeriodState, dict[str, Any] | None]:
    """The period state after evaluating ``pacing``, and the alert record to emit when its state changed.

    Nothing is told before ``alert_min_elapsed_pct`` of the window or after it ended (a replay of
    history after a fresh start must not alert about past periods).
    """
    if pacing is not None:
        p = replace(p, evaluated_at=pacing.as_of)
    if pacing is None or pacing.as_of >= pacing.window.end:
        return p, None
    if pacing.elapsed_share * 100 < rules.alert_min_elapsed_pct:
        return p, None
    state = alert_state(pacing, under_threshold_pct=rules.under_alert_pct, previous=p.alert_state)
    if state is p.alert_state:
        return p, None
    seq = p.alert_seq + 1
    alert = {
        "alert_id": f"{p.contract_id}/{p.period_key}/{seq}/{state}", "contract_id": p.contract_id,
        "advertiser_id": p.advertiser_id, "period_key": p.period_key, "state": str(state),
        "previous_state": str(p.alert_state), "currency": p.currency, "spend_exact": p.amount, "budget": pacing.budget,
        "expected_spend": pacing.expected_spend, "pace_pct": pacing.pace_pct, "projected_spend": pacing.projected_spend,
        "projected_cap_at": pacing.projected_cap_at if state is PacingState.CAP_EXHAUSTION_PROJECTED else None,
        "window_start": pacing.window.start, "window_end": pacing.window.end, "as_of": pacing.as_of,
        "emitted_at": now,
    }
    return replace(p, alert_state=state, alert_seq=seq), alert


def stalled(value: Mapping[str, Any], now: datetime, interval_s: int) -> bool:
    """Whether the stalled-delivery timer evaluates a ``periods`` value at ``now``: it has a
    budget, its period has not ended, no total came for ``interval_s`` (a period still
    delivering is judged on its totals) and it was not evaluated within ``interval_s``.
    Read from the stored value so that the timer decodes only the periods it judges."""
    now_us, span = to_micros(now), max(1, interval_s) * 1_000_000
    if value.get("cap_per_period") is None and value.get("minimum_commitment") is None \
            and value.get("contract_type") != "cpa":  # a CPA period's cap is in its terms (caps_of)
        return False
    if int(value["period_end_us"]) <= now_us or now_us - int(value["updated_at_us"]) < span:
        return False
    evaluated = value.get("evaluated_at_us")
    return evaluated is None or now_us - int(evaluated) >= span


# --------------------------------------------------------------------------- a batch of totals


@dataclass(frozen=True)
class PeriodStep:
    """What a batch of one period's totals does to the ``periods`` table (:func:`fold_period`)."""

    state: PeriodState
    #: alert records to emit, oldest first (acknowledged before ``state`` is written)
    alerts: list[dict[str, Any]]
    #: per update, in order: whether it was older than the state it met (ignored but for the hour range)
    stale: list[bool]


def fold_period(prev: PeriodState | None, updates: list[TotalUpdate], flight: Flight | None, rules: PacingRules,
                alert_interval_s: int, now: datetime) -> PeriodStep:
    """``updates`` of one (contract, period), in offset order, applied one after the other as if
    each were processed alone: the same state, alert decisions and alerts as record by record
    (a batch only saves the table writes in between), so the values do not depend on batching."""
    state = prev
    alerts: list[dict[str, Any]] = []
    stale: list[bool] = []
    for u in updates:
        old = state is not None and state.updated_at > u.updated_at
        state = apply_total(state, u)
        stale.append(old)
        # alerts judge the total as of when metering computed it, so a backlog replayed later
        # tells the same story it would have told live (the API evaluates at the clock)
        if not old and alert_due(state, u.updated_at, alert_interval_s, flight):
            state, alert = next_alert(state, evaluate(state, flight, u.updated_at, rules), rules, now)
            if alert is not None:
                alerts.append(alert)
    assert state is not None, "fold_period needs at least one update"
    return PeriodStep(state, alerts, stale)


def hours_to_write(prev: PeriodState | None, updates: list[TotalUpdate], state: PeriodState
                   ) -> dict[str, dict[str, Any]]:
    """The ``hourly`` values a batch of one period's totals may write (each still only when newer
    than the one held, :func:`newer`): the newest total of every hour the batch touches, and the
    hour ``prev`` held — but not the hour of the newest total, which the ``periods`` value
    (``state``) holds (the API reads it from there); it is written here once a newer total belongs
    to another hour, as ``prev`` then. One write per period per batch instead of two.

    That is safe only because the worker writes ``periods`` after its ``hourly`` writes were
    acknowledged (``tally_pacing.app``): a period state that survives a SIGKILL implies the hours
    before it did, so a batch replayed from it loses no hour that only an older state held
    (the property test in ``tests/unit/pacing`` kills between the writes).
    """
    newest: dict[str, TotalUpdate | PeriodState] = {}
    if prev is not None:
        newest[hour_key(prev.total_id, prev.hour)] = prev
    for u in updates:
        k = hour_key(u.total_id, u.hour)
        held = newest.get(k)
        if held is None or held.updated_at <= u.updated_at:
            newest[k] = u
    own = hour_key(state.total_id, state.hour)
    return {k: hour_value(v) for k, v in newest.items() if k != own}


# --------------------------------------------------------------------------- budget alerts


def budget_value(prev: Mapping[str, Any] | None, rec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``budget`` table value after a budget alert: the thresholds reached, per cap kind."""
    pct = rec.get("threshold_pct")
    if not isinstance(pct, int) or not 0 < pct <= 100:
        raise InvalidRecord("threshold_pct", "must be 1 to 100")
    kind = str(rec.get("cap_kind"))
    reached: dict[str, list[int]] = {k: list(v) for k, v in (prev or {}).get("reached", {}).items()}
    reached[kind] = sorted(set(reached.get(kind, [])) | {pct})
    return {"reached": reached}
