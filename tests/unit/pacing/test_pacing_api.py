"""The pacing API over an in-memory store: tenancy like the spend API, problems naming the field,
the OpenAPI document matching the routes, and the pure steps from a running total to table values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tally_billing.pacing import EVEN, PacingState
from tally_billing.periods import PeriodKind, period_by_key
from tally_kit.apidoc import route_mismatches
from tally_kit.auth import TokenVerifier, mint_token
from tally_kit.clock import FixedClock
from tally_pacing.api import create_api
from tally_pacing.openapi_spec import spec
from tally_pacing.state import (
    Flight,
    InvalidRecord,
    PacingRules,
    PeriodState,
    TotalUpdate,
    alert_due,
    apply_total,
    budget_value,
    evaluate,
    hour_key,
    hour_value,
    newer,
    next_alert,
)

SECRET = "unit-test-secret-0123456789abcdef0123"
MARCH = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)
RULES = PacingRules(EVEN, Decimal(10), Decimal(20), Decimal(5))
NOW = datetime(2026, 3, 16, 16, tzinfo=UTC)


def record(contract: str = "c-1", advertiser: str = "adv-a", *, amount: str = "10", billable: int = 1000,
           t: datetime = datetime(2026, 3, 2, 7, 15, tzinfo=UTC), cap: str | None = "1000") -> dict[str, Any]:
    return {"total_id": f"{contract}/2026-03", "contract_id": contract, "advertiser_id": advertiser,
            "contract_type": "cpm", "currency": "USD", "time_zone": MARCH.tz, "period_kind": "month",
            "period_key": "2026-03", "period_start": MARCH.start, "period_end": MARCH.end, "status": "open",
            "amount_exact": Decimal(amount), "budget_cap_per_period": None if cap is None else Decimal(cap),
            "budget_cap_total": None, "minimum_commitment": None, "lines": [], "counts": {"billable": billable},
            "latest_event_time": t, "updated_at": t + timedelta(seconds=1)}


class Store:
    def __init__(self) -> None:
        self.hours: dict[str, dict[str, Any]] = {}
        self.states: dict[str, PeriodState] = {}

    def add(self, rec: dict[str, Any]) -> None:
        u = TotalUpdate.from_record(rec)
        k = hour_key(u.total_id, u.hour)
        if newer(self.hours.get(k), u):
            self.hours[k] = hour_value(u)
        self.states[u.total_id] = apply_total(self.states.get(u.total_id), u)

    def periods(self) -> Iterable[PeriodState]:
        return list(self.states.values())

    def period(self, total_id: str) -> PeriodState | None:
        return self.states.get(total_id)

    def hour(self, key: str) -> Mapping[str, Any] | None:
        return self.hours.get(key)

    def flight(self, contract_id: str) -> Flight | None:
        return None

    def budget(self, total_id: str) -> Mapping[str, Any] | None:
        return None

    def not_ready(self) -> str | None:
        return None


def _client(store: Store) -> TestClient[Any, Any]:
    return TestClient(TestServer(create_api(store, FixedClock(NOW), RULES, verifier=TokenVerifier(SECRET))))


def _h(*roles: str, advertiser: str | None = None, partner: str | None = None) -> dict[str, str]:
    if advertiser:
        tok = mint_token(SECRET, "u", ["advertiser"], tenant_type="advertiser", tenant_id=advertiser)
    elif partner:
        tok = mint_token(SECRET, "u", ["partner"], tenant_type="partner", tenant_id=partner)
    else:
        tok = mint_token(SECRET, "u", list(roles or ("ops",)))
    return {"Authorization": f"Bearer {tok}"}


def test_the_openapi_document_describes_exactly_the_routes() -> None:
    app = create_api(Store(), FixedClock(NOW), RULES, verifier=TokenVerifier(SECRET))
    assert route_mismatches(app, spec()) == []


async def test_tenants_see_only_their_own_pacing_and_partners_none() -> None:
    store = Store()
    store.add(record("c-1", "adv-a"))
    store.add(record("c-2", "adv-b"))
    async with _client(store) as client:
        r = await client.get("/v1/pacing", headers=_h("finance"))
        assert [p["contract_id"] for p in (await r.json())["items"]] == ["c-1", "c-2"]
        r = await client.get("/v1/pacing", headers=_h(advertiser="adv-a"))
        assert [p["contract_id"] for p in (await r.json())["items"]] == ["c-1"]
        r = await client.get("/v1/pacing?advertiser_id=adv-b", headers=_h(advertiser="adv-a"))
        assert (await r.json())["count"] == 0
        assert (await client.get("/v1/pacing/c-2/series", headers=_h(advertiser="adv-a"))).status == 404
        assert (await client.get("/v1/pacing", headers=_h(partner="ptn-1"))).status == 403
        assert (await client.get("/v1/pacing")).status == 401


async def test_bad_input_is_a_problem_naming_every_field() -> None:
    store = Store()
    store.add(record())
    async with _client(store) as client:
        r = await client.get("/v1/pacing/c-1/series?granularity=minute&period_key=x&extra=1", headers=_h())
        assert r.status == 422 and r.content_type == "application/problem+json"
        fields = sorted(e["field"] for e in (await r.json())["errors"])
        assert fields == ["query.extra", "query.granularity", "query.period_key"]
        r = await client.get("/v1/pacing?status=maybe&status=open", headers=_h())
        assert [e["field"] for e in (await r.json())["errors"]] == ["query.status"]
        r = await client.get("/v1/pacing/" + "c" * 201 + "/series", headers=_h())
        assert r.status == 422 and (await r.json())["errors"][0]["field"] == "path.contract"
        assert (await client.get("/v1/pacing/c-1/series?period_key=2026-04", headers=_h())).status == 404


async def test_pacing_and_series_are_exact_decimal_strings() -> None:
    store = Store()
    store.add(record(amount="12.5", billable=1000, t=datetime(2026, 3, 2, 7, 15, tzinfo=UTC)))
    store.add(record(amount="20", billable=1600, t=datetime(2026, 3, 2, 9, 5, tzinfo=UTC)))
    async with _client(store) as client:
        body = await (await client.get("/v1/pacing", headers=_h())).json()
        p = body["items"][0]
        assert p["spend"] == "20" and p["budget"] == "1000" and p["status"] == "under"
        assert isinstance(p["expected_spend"], str) and p["as_of"] == NOW.isoformat()
        s = await (await client.get("/v1/pacing/c-1/series", headers=_h())).json()
        spend = [pt["spend"] for pt in s["points"]]
        assert spend[-3:] == ["12.5", "0", "7.5"] and len(spend) == 29  # 05:00 to 09:00 UTC on the 2nd
        d = await (await client.get("/v1/pacing/c-1/series?granularity=day", headers=_h())).json()
        assert [pt["spend"] for pt in d["points"]] == ["0", "20"]


def test_an_older_update_never_overwrites_a_newer_one() -> None:
    new = TotalUpdate.from_record(record(amount="20", t=datetime(2026, 3, 2, 7, 40, tzinfo=UTC)))
    old = TotalUpdate.from_record(record(amount="10", t=datetime(2026, 3, 2, 7, 15, tzinfo=UTC)))
    assert newer(hour_value(old), new) and not newer(hour_value(new), old) and newer(hour_value(new), new)
    state = apply_total(apply_total(None, new), old)
    assert state.amount == Decimal(20)
    assert PeriodState.from_json(state.to_json()) == state


def test_a_bad_record_names_its_field() -> None:
    bad = record()
    bad["amount_exact"] = 1.5
    try:
        TotalUpdate.from_record(bad)
    except InvalidRecord as exc:
        assert exc.field == "amount_exact"
    else:
        raise AssertionError("accepted a float amount")
    assert budget_value(None, {"threshold_pct": 80, "cap_kind": "per_period"}) == {"reached": {"per_period": [80]}}


def test_alerts_fire_once_per_state_change_and_never_for_a_past_window() -> None:
    state = apply_total(None, TotalUpdate.from_record(record(amount="900", t=datetime(2026, 3, 8, tzinfo=UTC))))
    as_of = datetime(2026, 3, 8, tzinfo=UTC)
    state, alert = next_alert(state, evaluate(state, None, as_of, RULES), RULES, NOW)
    assert alert is not None and alert["state"] == "cap_exhaustion_projected" and alert["projected_cap_at"] is not None
    assert alert["alert_id"] == "c-1/2026-03/1/cap_exhaustion_projected"
    again, none = next_alert(state, evaluate(state, None, as_of, RULES), RULES, NOW)
    assert none is None and again == state
    # a replay of the whole period after it ended tells nothing
    fresh = apply_total(None, TotalUpdate.from_record(record(amount="1", t=datetime(2026, 3, 8, tzinfo=UTC))))
    late, nothing = next_alert(fresh, evaluate(fresh, None, MARCH.end, RULES), RULES, NOW)
    assert nothing is None and late.alert_state is PacingState.ON_PACE
    # nor before 5 % of the window has passed
    _early, quiet = next_alert(fresh, evaluate(fresh, None, MARCH.start + timedelta(hours=30), RULES), RULES, NOW)
    assert quiet is None


def test_alerts_are_evaluated_at_most_once_per_interval_and_never_without_a_budget() -> None:
    t = datetime(2026, 3, 8, tzinfo=UTC)
    state = apply_total(None, TotalUpdate.from_record(record(amount="900", t=t)))
    assert alert_due(state, state.updated_at, 30)
    state, _ = next_alert(state, evaluate(state, None, state.updated_at, RULES), RULES, NOW)
    assert not alert_due(state, state.updated_at + timedelta(seconds=29), 30)
    assert alert_due(state, state.updated_at + timedelta(seconds=30), 30)
    assert alert_due(state, state.updated_at, 0)
    no_budget = apply_total(None, TotalUpdate.from_record(record(cap=None, t=t)))
    assert not alert_due(no_budget, no_budget.updated_at, 0)


def test_the_flight_comes_from_the_terms_and_a_termination_cuts_it() -> None:
    import json

    from tally_billing.examples import cpm_terms_json
    from tally_pacing.state import flight_from_terms

    terms = cpm_terms_json()
    terms["common"].update({"flight_start": "2026-03-10", "flight_end": "2026-04-30"})
    rec = {"contract_id": "c-1", "revision": 4, "terminated_at": datetime(2026, 3, 20, 4, tzinfo=UTC),
           "versions": [{"version": 1, "effective_from": datetime(2026, 3, 10, 4, tzinfo=UTC), "effective_to": None,
                         "terms_json": json.dumps(terms)}]}
    f = flight_from_terms(rec)
    assert f.start == datetime(2026, 3, 10, 4, tzinfo=UTC) and f.revision == 4
    assert f.end == datetime(2026, 3, 20, 3, 59, 59, 999999, tzinfo=UTC)
    state = apply_total(None, TotalUpdate.from_record(record(amount="10", t=datetime(2026, 3, 12, tzinfo=UTC))))
    p = evaluate(state, f, datetime(2026, 3, 15, 4, tzinfo=UTC), RULES)
    assert p is not None and p.window.start == f.start and p.window.end == datetime(2026, 3, 20, 4, tzinfo=UTC)
    assert p.elapsed_share == Decimal("0.500000")
    try:
        flight_from_terms({**rec, "versions": [{"version": 1, "effective_from": f.start, "terms_json": "{}"}]})
    except InvalidRecord as exc:
        assert exc.field == "versions" and "version 1 has invalid terms" in str(exc)
    else:
        raise AssertionError("accepted terms without content")


async def test_the_total_cap_is_paced_over_the_flight_on_the_spend_of_every_period() -> None:
    from datetime import date
    from fractions import Fraction

    from tally_billing.periods import flight_end_instant, flight_start_instant

    feb = period_by_key("2026-02", "America/New_York", PeriodKind.MONTH)
    start, last = flight_start_instant(date(2026, 2, 1), MARCH.tz), flight_end_instant(date(2026, 4, 30), MARCH.tz)

    class FlightStore(Store):
        def flight(self, contract_id: str) -> Flight | None:
            return Flight(start, last, 1)

    store = FlightStore()
    for rec in (record(amount="20"), {**record(amount="900", t=datetime(2026, 2, 20, tzinfo=UTC)),
                                      "total_id": "c-1/2026-02", "period_key": "2026-02",
                                      "period_start": feb.start, "period_end": feb.end}):
        store.add({**rec, "budget_cap_total": Decimal("3000")})
    async with _client(store) as client:
        items = (await (await client.get("/v1/pacing?period_key=2026-03", headers=_h())).json())["items"]
        life = items[0]["lifetime"]
        assert life["cap_total"] == "3000" and life["spend"] == "920"  # February's and March's totals
        assert (life["window_start"], life["window_end"]) == (start.isoformat(), (last + timedelta(microseconds=1)).isoformat())
        share = Fraction((NOW - start) // timedelta(microseconds=1), (last - start) // timedelta(microseconds=1) + 1)
        assert abs(Fraction(Decimal(life["expected_spend"])) - 3000 * share) <= Fraction(1, 10 ** 12)
        assert life["status"] == "under" and Decimal(life["pace_pct"]) < 80
    # without a flight (or with an open-ended one) there is nothing to spread the cap over
    unknown = Store()
    unknown.add({**record(amount="20"), "budget_cap_total": Decimal("3000")})
    async with _client(unknown) as client:
        items = (await (await client.get("/v1/pacing", headers=_h())).json())["items"]
        assert items[0]["budget_cap_total"] == "3000" and items[0]["lifetime"] is None


async def test_a_cpa_contract_is_paced_against_the_amount_cap_per_period_of_its_terms() -> None:
    import json

    from tally_billing.examples import cpa_terms_json
    from tally_pacing.state import caps_of, flight_from_terms

    terms = cpa_terms_json()  # caps.contract.max_amount_per_period 10000.00
    rec = {"contract_id": "c-1", "revision": 2, "terminated_at": None,
           "versions": [{"version": 1, "effective_from": datetime(2026, 1, 1, 5, tzinfo=UTC), "effective_to": None,
                         "terms_json": json.dumps(terms)}]}
    flight = flight_from_terms(rec)
    assert flight.cpa_amount_cap == Decimal("10000.00") and Flight.from_json(flight.to_json()) == flight
    cpa = {**record(amount="2000", cap=None, t=datetime(2026, 3, 8, tzinfo=UTC)), "contract_type": "cpa",
           "counts": {"conversions_attributed": 40}}
    state = apply_total(None, TotalUpdate.from_record(cpa))
    assert caps_of(state, None) == (None, None)  # the running total carries no cap for CPA
    assert caps_of(state, flight) == (Decimal("10000.00"), Decimal("10000.00"))
    assert not alert_due(state, state.updated_at, 30) and alert_due(state, state.updated_at, 30, flight)
    p = evaluate(state, flight, NOW, RULES)
    assert p is not None and p.budget == Decimal("10000.00") and p.status.value == "under"

    class CpaStore(Store):
        def flight(self, contract_id: str) -> Flight | None:
            return flight

    store = CpaStore()
    store.add(cpa)
    async with _client(store) as client:
        item = (await (await client.get("/v1/pacing", headers=_h())).json())["items"][0]
        assert (item["budget"], item["cpa_amount_cap_per_period"], item["status"]) == ("10000", "10000", "under")
        assert item["budget_cap_per_period"] is None and item["billable"] == 40
