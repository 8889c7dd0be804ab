"""The pacing service as a real faust worker process on the real broker.

The expected series and pacing are computed here independently of the service (plain
fractions over the records produced), and compared with what the API answers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from tally_billing.examples import cpm_terms_json
from tally_billing.periods import Period, PeriodKind, period_by_key
from tally_streams.kafka import read_to_end

from .conftest import PacingWorld, await_condition, running_total

pytestmark = pytest.mark.integration

MARCH = period_by_key("2026-03", "America/New_York", PeriodKind.MONTH)
CLOCK = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)  # 10 days (240 h) into New York March


def _updates(contract: str, advertiser: str, period: Period, *, hours: int, per_hour: int, rate: str,
             cap: str | None, start: datetime) -> list[dict[str, Any]]:
    """Totals as metering publishes them: several per hour, each absolute (cumulative)."""
    out = []
    billable = 0
    for h in range(hours):
        for i in range(per_hour):
            billable += 1000 + 37 * ((h * per_hour + i) % 11)
            t = start + timedelta(hours=h, minutes=(60 // per_hour) * i + 1)
            out.append(running_total(contract, advertiser, period, amount=str(Decimal(billable) * Decimal(rate) / 1000),
                                     billable=billable, latest_event_time=t, updated_at=t + timedelta(seconds=2),
                                     cap=cap))
    return out


def expected_series(records: list[dict[str, Any]], period: Period) -> list[tuple[str, str, int]]:
    """Hourly (start, spend, billable): the last update per hour of its newest event, differenced."""
    last: dict[datetime, dict[str, Any]] = {}
    for r in records:
        h = r["latest_event_time"].replace(minute=0, second=0, microsecond=0)
        if h not in last or last[h]["updated_at"] <= r["updated_at"]:
            last[h] = r
    out = []
    cum_a, cum_b = Decimal(0), 0
    h = period.start
    while h <= max(last):
        r = last.get(h)
        a, b = (r["amount_exact"], r["counts"]["billable"]) if r else (cum_a, cum_b)
        out.append((h.isoformat(), format((a - cum_a).normalize(), "f"), b - cum_b))
        cum_a, cum_b = a, b
        h += timedelta(hours=1)
    return out


def _series(world: PacingWorld, contract: str, granularity: str = "hour") -> list[tuple[str, str, int]]:
    status, body = world.get(f"/v1/pacing/{contract}/series?period_key=2026-03&granularity={granularity}")
    if status == 404:  # not seen yet
        return []
    assert status == 200, body
    return [(p["start"], p["spend"], p["billable"]) for p in body["points"]]


def _terms(contract: str, advertiser: str, flight_start: str, flight_end: str) -> dict[str, Any]:
    terms = cpm_terms_json()
    terms["common"].update({"advertiser_id": advertiser, "flight_start": flight_start, "flight_end": flight_end})
    return {"contract_id": contract, "advertiser_id": advertiser, "contract_type": "cpm", "status": "active",
            "terminated_at": None, "revision": 3, "event_id": "e-1",
            "versions": [{"version": 1, "effective_from": datetime(2026, 1, 1, 5, tzinfo=UTC), "effective_to": None,
                          "approved_at": datetime(2025, 12, 20, tzinfo=UTC), "terms_json": json.dumps(terms)}]}


def test_series_pacing_and_alerts_match_an_independent_computation(pacing_world: PacingWorld) -> None:
    w = pacing_world
    w.set_clock(CLOCK)
    # c-fast: cap 1,000 with a flight from 6 to 25 March; spends ~ 8.9/h against 2.1/h expected: the cap is
    # projected before the end
    fast = _updates("c-fast", "adv-a", MARCH, hours=60, per_hour=3, rate="2.5", cap="1000",
                    start=datetime(2026, 3, 6, 5, tzinfo=UTC))
    # c-slow: cap 100,000 over the whole month, far under pace
    slow = _updates("c-slow", "adv-b", MARCH, hours=240, per_hour=2, rate="0.1", cap="100000", start=MARCH.start)
    w.produce("terms", "contract_terms", [_terms("c-fast", "adv-a", "2026-03-06", "2026-03-25")],
              key=lambda r: r["contract_id"])
    w.start()
    # lz4 batches inside committed transactions, as metering writes them; an aborted one must never count
    bogus = running_total("c-fast", "adv-a", MARCH, amount="999999", billable=10 ** 9,
                          latest_event_time=datetime(2026, 3, 6, 7, 30, tzinfo=UTC),
                          updated_at=datetime(2026, 3, 30, tzinfo=UTC), cap="1000")
    w.produce("running_totals", "running_total", [bogus], key=lambda r: r["total_id"], transactional=True, abort=True)
    w.produce("running_totals", "running_total", fast[:100], key=lambda r: r["total_id"], transactional=True)
    w.produce_raw("running_totals", b"c-fast/2026-03", b"not avro at all")
    w.produce("running_totals", "running_total", fast[100:], key=lambda r: r["total_id"], transactional=True)
    w.produce("running_totals", "running_total", slow, key=lambda r: r["total_id"])

    await_condition("c-slow's series to be complete",
                    lambda: _series(w, "c-slow") == expected_series(slow, MARCH), timeout_s=180)
    assert _series(w, "c-fast") == expected_series(fast, MARCH)

    # daily buckets are New York days, and sum to the same spend
    days = _series(w, "c-slow", "day")
    assert days[0][0] == MARCH.start.isoformat()
    assert len(days) == 11  # 240 hours from 1 March: the 8th has 23, so the last hour is on the 11th
    assert days[8][0] == "2026-03-09T04:00:00+00:00"  # EDT from the 8th
    assert sum(Decimal(d[1]) for d in days) == slow[-1]["amount_exact"]

    # pacing, recomputed independently: even pacing over the period cut to the flight
    status, body = w.get("/v1/pacing?period_key=2026-03")
    assert status == 200
    by_contract = {p["contract_id"]: p for p in body["items"]}
    f = by_contract["c-fast"]
    window_start = datetime(2026, 3, 6, 5, tzinfo=UTC)
    window_end = datetime(2026, 3, 26, 4, tzinfo=UTC)  # 25 March 23:59:59.999999 EDT, exclusive
    assert (f["window_start"], f["window_end"]) == (window_start.isoformat(), window_end.isoformat())
    share = Fraction((CLOCK - window_start) // timedelta(microseconds=1), (window_end - window_start) // timedelta(microseconds=1))
    spend = Fraction(fast[-1]["amount_exact"])
    assert Decimal(f["spend"]) == fast[-1]["amount_exact"]
    assert abs(Fraction(Decimal(f["expected_spend"])) - 1000 * share) <= Fraction(1, 10 ** 12)
    assert abs(Fraction(Decimal(f["projected_spend"])) - spend / share) <= Fraction(1, 10 ** 12)
    cap_at = window_start + timedelta(microseconds=int((window_end - window_start) // timedelta(microseconds=1)
                                                       * share * 1000 / spend))
    assert abs(datetime.fromisoformat(f["projected_cap_at"]) - cap_at) <= timedelta(microseconds=1)
    assert f["status"] == "over" and f["alert_state"] == "cap_exhaustion_projected"
    s = by_contract["c-slow"]
    assert s["status"] == "under" and s["alert_state"] == "under_pacing" and s["projected_cap_at"] is None

    # one alert per state change, with the projected instant; the bogus aborted total never counted
    def alerts() -> list[dict[str, Any]]:
        found = w.read("pacing_alerts", "pacing_alert")
        return found if len(found) >= 2 else []

    got = sorted(await_condition("two pacing alerts", alerts), key=lambda a: a["contract_id"])
    assert [(a["contract_id"], a["state"], a["previous_state"]) for a in got] == [
        ("c-fast", "cap_exhaustion_projected", "on_pace"), ("c-slow", "under_pacing", "on_pace")]
    assert got[0]["alert_id"] == "c-fast/2026-03/1/cap_exhaustion_projected"
    assert got[0]["projected_cap_at"] is not None and got[0]["projected_cap_at"] < window_end
    # the undecodable record is a dead letter naming its kind, and nothing else was affected
    dead = await_condition("the dead letter", lambda: w.read("dlq", "dead_letter"))
    assert [(d["error_kind"], d["value"]) for d in dead] == [("not_single_object", b"not avro at all")]


def test_tenancy_and_bad_input(pacing_world: PacingWorld) -> None:
    w = pacing_world
    w.set_clock(CLOCK)
    recs = _updates("c-1", "adv-a", MARCH, hours=3, per_hour=1, rate="1", cap=None, start=MARCH.start)
    w.produce("running_totals", "running_total", recs, key=lambda r: r["total_id"])
    alert = {"alert_id": "c-1/2026-03/per_period/50", "contract_id": "c-1", "advertiser_id": "adv-a", "currency": "USD",
             "cap_kind": "per_period", "period_key": "2026-03", "threshold_pct": 50, "cap": Decimal("6"),
             "spent_exact": Decimal("3.074"), "latest_event_time": None, "emitted_at": CLOCK}
    w.produce("budget_alerts", "budget_alert", [alert, {**alert, "threshold_pct": 80}], key=lambda r: r["contract_id"])
    w.start()
    def budget_alerts_shown() -> bool:
        # empty until the first batch is in; the three totals may come in more than one batch
        items = w.get("/v1/pacing?contract_id=c-1")[1]["items"]
        return bool(items) and items[0]["budget_alerts"] == {"per_period": [50, 80]} and items[0]["billable"] == 3111  # 1000 + 1037 + 1074

    await_condition("c-1's pacing with metering's budget alerts and its last total", budget_alerts_shown)
    status, own = w.get("/v1/pacing", w.token(advertiser="adv-a"))
    assert status == 200 and [p["contract_id"] for p in own["items"]] == ["c-1"]
    assert own["items"][0]["status"] == "no_budget"
    assert w.get("/v1/pacing", w.token(advertiser="adv-b"))[1]["count"] == 0
    assert w.get("/v1/pacing?advertiser_id=adv-a", w.token(advertiser="adv-b"))[1]["count"] == 0
    assert w.get("/v1/pacing/c-1/series", w.token(advertiser="adv-b"))[0] == 404
    assert w.get("/v1/pacing", w.token(partner="ptn-1"))[0] == 403
    status, problem = w.get("/v1/pacing/c-1/series?granularity=week&period_key=March")
    assert status == 422
    assert sorted(e["field"] for e in problem["errors"]) == ["query.granularity", "query.period_key"]
    assert w.get("/v1/pacing?colour=red")[1]["errors"][0]["field"] == "query.colour"
    assert w.get("/v1/pacing/nobody/series")[0] == 404
    status, series = w.get("/v1/pacing/c-1/series", w.token(advertiser="adv-a"))
    assert status == 200 and [p["billable"] for p in series["points"]] == [1000, 1037, 1074]


def _hour_series_by_contract(world: PacingWorld, contracts: list[str]) -> dict[str, list[tuple[str, str, int]]]:
    return {c: _series(world, c) for c in contracts}


def test_sigkill_mid_stream_and_restart_gives_the_same_series(pacing_world: PacingWorld) -> None:
    w = pacing_world
    w.set_clock(CLOCK)
    contracts = [f"c-{i}" for i in range(6)]
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, c in enumerate(contracts):
        per[c] = _updates(c, "adv-a", MARCH, hours=60 + 10 * i, per_hour=4, rate="3", cap="50000", start=MARCH.start)
    first = [r for c in contracts for r in per[c][: len(per[c]) // 2]]
    second = [r for c in contracts for r in per[c][len(per[c]) // 2:]]
    proc = w.start()
    # mid-stream: the worker is killed while the first half is still arriving, in batches of 40
    for i in range(0, len(first), 40):
        w.produce("running_totals", "running_total", first[i:i + 40], key=lambda r: r["total_id"])
        if i == 400:
            await_condition("the worker to be under way", lambda: w.metric("tally_pacing_records_total") >= 50,
                            every_s=0.05)
            w.kill(proc)
    assert proc.returncode == -9
    w.produce("running_totals", "running_total", second, key=lambda r: r["total_id"])
    w.start()
    want = {c: expected_series(per[c], MARCH) for c in contracts}
    try:
        await_condition("the same series after the SIGKILL", lambda: _hour_series_by_contract(w, contracts) == want,
                        timeout_s=180)
    except AssertionError as exc:
        got = _hour_series_by_contract(w, contracts)
        # per contract that differs: (points held, points wanted) and the first hours that differ
        wrong = {c: ((len(got[c]), len(want[c])), [(g, e) for g, e in zip(got[c], want[c], strict=False) if g != e][:3])
                 for c in contracts if got[c] != want[c]}
        raise AssertionError(f"{exc}: (got, want) per contract: {wrong}; the restarted worker took "
                             f"{w.metric('tally_pacing_records_total')} records\nlog:\n{w.logs.read_text()[-6000:]}") from exc
    # batches mix partitions: every table write still went to its source record's changelog partition
    # (the partition a worker owning that input partition restores)
    source = {(m.key() or b"").decode(): m.partition()
              for m in read_to_end(w.bootstrap, w.topics["running_totals"], timeout_s=60)}
    assert len(set(source.values())) > 1  # the six contracts are spread over partitions
    for table in ("periods", "hourly"):
        written = [(json.loads(m.key() or b"null"), m.partition())
                   for m in read_to_end(w.bootstrap, f"{w.app_id}-{table}-changelog", timeout_s=60)]
        assert written, table
        assert all(p == source["/".join(k.split("/")[:2])] for k, p in written), table


def test_a_restart_replays_the_changelog(pacing_world: PacingWorld, make_topic: Any) -> None:
    w = pacing_world
    w.set_clock(CLOCK)
    recs = _updates("c-r", "adv-a", MARCH, hours=48, per_hour=2, rate="4", cap="9000", start=MARCH.start)
    w.produce("running_totals", "running_total", recs, key=lambda r: r["total_id"])
    proc = w.start()
    want = expected_series(recs, MARCH)
    await_condition("the series", lambda: _series(w, "c-r") == want)
    before = w.get("/v1/pacing?contract_id=c-r")[1]
    w.stop(proc)
    # The same app id reading an empty totals topic: every value can only come back from the
    # tables' changelog topics.
    from tally_streams.topics import RUNNING_TOTALS

    empty = make_topic(RUNNING_TOTALS)
    w.start(TALLY_PACING_TOPIC_RUNNING_TOTALS=empty)
    assert _series(w, "c-r") == want
    assert w.get("/v1/pacing?contract_id=c-r")[1] == before


def test_a_stalled_delivery_alerts_under_pacing_from_the_timer(pacing_world: PacingWorld) -> None:
    w = pacing_world
    w.set_clock(CLOCK)
    # 97 % of an even pace of a 1,000 cap over March (743 hours: DST on the 8th), hour by hour
    # until an hour before the clock — on pace, and then nothing more arrives
    recs = []
    for h in range(240):
        t = MARCH.start + timedelta(hours=h, minutes=1)
        recs.append(running_total("c-stall", "adv-a", MARCH, amount=str((Decimal(970) * h / 743).quantize(Decimal("1E-6"))),
                                  billable=1000 * h, latest_event_time=t, updated_at=t + timedelta(seconds=2), cap="1000"))
    w.produce("running_totals", "running_total", recs, key=lambda r: r["total_id"])
    w.start(TALLY_PACING_ALERT_INTERVAL_S="1")  # the timer ticks every second
    last = str(recs[-1]["amount_exact"].normalize())

    def pacing() -> dict[str, Any] | None:
        items = w.get("/v1/pacing?contract_id=c-stall")[1]["items"]
        return items[0] if items and items[0]["spend"] == last else None

    now = await_condition("every total of c-stall", pacing)
    assert (now["status"], now["alert_state"]) == ("on_pace", "on_pace")
    assert w.read("pacing_alerts", "pacing_alert") == []
    # three days on without a total: 312 of 743 hours expect 419.92, the spend is 312.01 (74 %)
    later = CLOCK + timedelta(days=3)
    w.set_clock(later)
    got = await_condition("the timer's under_pacing alert", lambda: w.read("pacing_alerts", "pacing_alert"))
    assert [(a["contract_id"], a["state"], a["previous_state"], a["as_of"]) for a in got] == [
        ("c-stall", "under_pacing", "on_pace", later)]
    assert got[0]["alert_id"] == "c-stall/2026-03/1/under_pacing" and got[0]["spend_exact"] == recs[-1]["amount_exact"]
    # the state that remembers it is written (the API shows it); one alert so far
    await_condition("the alert state in the table",
                    lambda: w.get("/v1/pacing?contract_id=c-stall")[1]["items"][0]["alert_state"] == "under_pacing")
    assert w.metric("tally_pacing_alerts_total") == 1
