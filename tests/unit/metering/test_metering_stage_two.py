"""Stage two without a broker: whatever order usage, contract terms (late IOs, backdated
amendments, terminations), IVT reports and the clock arrive in, every closed period's lines plus
the adjustments that correct it equal the rating of the final picture — per price point, exactly.

The final picture is computed apart from the engine: the whole ledger, the highest revision of
every contract, the applied IVT credits, then ``derive`` and ``rate_period``."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tally_billing.examples import cpm_terms_json
from tally_billing.periods import close_time, period_by_key
from tally_billing.routing import ContractBook
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY, DAY_US, to_micros
from tally_metering import domain as d
from tally_metering.engine import StageTwo
from tally_metering.metrics import WorkerMetrics
from tally_metering.state import TotalsStore

ADV = "adv-p"
TZ = "America/New_York"
NY = {day: datetime(2026, m, dd, 5, tzinfo=UTC) for day, (m, dd) in
      {"jan1": (1, 1), "jan15": (1, 15), "feb1": (2, 1), "feb10": (2, 10), "feb20": (2, 20)}.items()}
SETTINGS = SimpleNamespace(metering_grace_seconds=7200, metering_rerate_horizon_days=400, metering_totals_interval_ms=1000,
                           metering_topic_impressions="imp", metering_topic_deltas="deltas",
                           metering_topic_terms="terms", metering_delta_partitions=1)


def terms(campaigns: list[str], bands: list[tuple[int, str]], cap: str | None) -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update(time_zone=TZ, campaign_ids=campaigns, advertiser_id=ADV, flight_start="2026-01-01",
                       flight_end="2026-12-31", auto_renew=False, renewal_term_months=None, escalator_pct=None,
                       notice_period_days=0)
    t["cpm"] = {"rate_card": {"kind": "graduated", "tier_basis": "period",
                              "bands": [{"from_impressions": f, "rate_cpm": r} for f, r in bands]},
                "budget_caps": {"total": None, "per_period": cap}, "minimum_commitment_per_period": None}
    return t


def contract_history(rng: random.Random, cid: str, campaigns: list[str]) -> list[dict[str, Any]]:
    """Revisions of one contract: v1; maybe a backdated v2 (other rates, maybe fewer campaigns);
    maybe a termination. Each revision is one contracts.terms record."""
    def bands() -> list[tuple[int, str]]:
        return [(0, rng.choice(["10.00", "12.50", "8.125"])), (rng.choice([50, 200]), rng.choice(["5.00", "3.333"]))]

    v1 = terms(campaigns, bands(), rng.choice([None, None, "2.50"]))
    versions = [(1, NY["jan1"], None, v1)]
    revisions = [list(versions)]
    if rng.random() < 0.7:
        start = rng.choice([NY["jan15"], NY["feb10"]])
        v2 = terms(rng.choice([campaigns, campaigns[:1]]), bands(), rng.choice([None, "3.00"]))
        versions = [(1, NY["jan1"], start, v1), (2, start, None, v2)]
        revisions.append(list(versions))
    terminated = NY["feb20"] if rng.random() < 0.3 else None
    out = []
    for n, vs in enumerate(revisions, start=1):
        out.append(_record(cid, vs, n, None))
    if terminated is not None:
        out.append(_record(cid, versions, len(revisions) + 1, terminated))
    return out


def _record(cid: str, versions: list[Any], revision: int, terminated_at: datetime | None) -> dict[str, Any]:
    return {"contract_id": cid, "advertiser_id": ADV, "contract_type": "cpm", "revision": revision,
            "terminated_at": terminated_at,
            "versions": [{"version": v, "effective_from": ef, "effective_to": et, "terms_json": json.dumps(t)}
                         for v, ef, et, t in versions]}


def usage_deltas(rng: random.Random) -> list[dict[str, Any]]:
    """Impressions of three campaigns over January to early March, as stage one would send them."""
    start, span = to_micros(datetime(2026, 1, 1, 6, tzinfo=UTC)), 65 * DAY_US
    out, offset = [], 0
    for _ in range(rng.randrange(4, 12)):
        rows: dict[tuple[str, int, str], list[int]] = {}
        days: dict[tuple[str, int], int] = {}
        for _ in range(rng.randrange(1, 40)):
            t = start + rng.randrange(span)
            campaign = rng.choice(["c1", "c2", "c3"])
            cls = rng.choices(["none|first_party", "givt|first_party", "none|third_party", d.LEDGER_DUPLICATE],
                              [85, 5, 5, 5])[0]
            n = rng.randrange(1, 30)
            row = rows.setdefault((campaign, t // BUCKET_US, cls), [0, t])
            row[0] += n
            row[1] = max(row[1], t)
            offset += n
            days[(campaign, t // DAY_US)] = offset
        groups: dict[tuple[str, int, str], list[Any]] = {}
        for (c, b, cls), (n, newest) in sorted(rows.items()):
            day, i = divmod(b, BUCKETS_PER_DAY)
            g = groups.setdefault((c, day, cls), [c, day, cls, [], newest, days[(c, day)]])
            g[3].append([i, n])
            g[4] = max(g[4], newest)
        out.append({"kind": "usage", "advertiser_id": ADV,
                    "src": {"topic": "imp", "partition": 0, "first": offset, "last": offset, "first_id": f"i{offset}"},
                    "groups": list(groups.values())})
    return out


def ledger_of(deltas: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, d.UsageDay]]:
    usage: dict[tuple[str, str], dict[int, d.UsageDay]] = {}
    for delta in deltas:
        for campaign, day, cls, cells, newest, _ in delta["groups"]:
            u = usage.setdefault((ADV, campaign), {}).setdefault(day, d.UsageDay(ADV, campaign, day))
            for i, n in cells:
                u.add(i, cls, n)
            u.max_event_us = max(u.max_event_us, newest)
    return usage


def ivt_reports(rng: random.Random, usage: dict[tuple[str, str], dict[int, d.UsageDay]]) -> list[dict[str, Any]]:
    """Reports that fit the whole ledger: each credits part of one campaign-day's valid impressions."""
    out = []
    cells = [(c, u) for (_, c), days in sorted(usage.items()) for _, u in sorted(days.items())
             if u.total("none|first_party") > 1]
    for k in range(min(len(cells), rng.randrange(0, 3))):
        campaign, u = cells[rng.randrange(len(cells))]
        start = u.day * DAY_US
        count = rng.randrange(1, u.total("none|first_party") // 2 + 1)
        out.append({"kind": "ivt", "src": {"topic": "ivt", "partition": 0, "offset": k},
                    "rec": {"report_id": f"r{k}-{campaign}-{u.day}", "vendor": "v", "advertiser_id": ADV,
                            "entries": [[campaign, start, start + DAY_US, "sivt", "first_party", count]]}})
    return out


LineKey = tuple[str, int, str]


def final_picture(book: ContractBook, usage: dict[tuple[str, str], dict[int, d.UsageDay]],
                  reports: list[dict[str, Any]]) -> dict[tuple[str, str], dict[LineKey, tuple[int, Decimal]]]:
    applied: set[str] = set()
    for r in reports:  # in order: each fits the whole ledger after the ones before it
        rec = r["rec"]
        if rec["report_id"] in applied:
            continue
        plan, refusal = d.plan_ivt_credit(usage, ADV, [tuple(e) for e in rec["entries"]], not_before_us=0)
        if refusal is not None:
            continue
        applied.add(rec["report_id"])
        for campaign, bucket, valid, ivt, n in plan:
            u = usage[(ADV, campaign)][bucket // BUCKETS_PER_DAY]
            u.add(bucket % BUCKETS_PER_DAY, valid, -n)
            u.add(bucket % BUCKETS_PER_DAY, ivt, n)
    out: dict[tuple[str, str], dict[LineKey, tuple[int, Decimal]]] = {}
    for (cid, key), totals in d.derive(book, (u for days in usage.values() for u in days.values())).items():
        contract = book.get(cid)
        assert contract is not None
        rating = d.rate_period(contract, period_by_key(key, TZ, contract.period_kind), totals)
        out[(cid, key)] = _points([vars(ln) for ln in rating.lines])
    return out


def _points(lines: list[dict[str, Any]]) -> dict[LineKey, tuple[int, Decimal]]:
    acc: dict[LineKey, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for ln in lines:
        k = (ln["line_type"], ln["contract_version"], ln["price_point"])
        acc[k][0] += ln["quantity"]
        acc[k][1] += ln["amount_exact"]
    return {k: (q, a) for k, (q, a) in acc.items() if q or a}


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_closed_lines_plus_adjustments_equal_the_final_picture_whatever_the_order(seed: int) -> None:
    rng = random.Random(seed)
    terms_records = contract_history(rng, "K1", ["c1", "c2"]) + contract_history(rng, "K2", ["c3"])
    deltas = usage_deltas(rng)
    reports = ivt_reports(rng, ledger_of(deltas))
    reports += reports[:1]  # a vendor sends one twice
    # Any order, except that a report follows the usage it credits (a report that came first
    # would be refused — rightly — and the final picture would not hold it).
    events: list[tuple[str, Any]] = [("terms", r) for r in terms_records] + [("usage", u) for u in deltas]
    rng.shuffle(events)
    events += [("ivt", r) for r in reports]
    ticks = sorted(rng.sample(range(len(events) + 1), k=min(4, len(events) + 1)))
    clock_points = [datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 2, 3, tzinfo=UTC), datetime(2026, 2, 25, tzinfo=UTC),
                    datetime(2026, 3, 5, tzinfo=UTC)]

    effects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    book = ContractBook()
    two = StageTwo(SETTINGS, book, lambda kind, rec, key: effects[kind].append(rec), WorkerMetrics())
    two.stores[0] = TotalsStore(0)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    for i, (kind, payload) in enumerate(events):
        if i in ticks:
            now = max(now, clock_points[ticks.index(i)])
            two.close_due(now)
        if kind == "terms":
            if book.apply(payload):
                two.terms_changed.add(payload["contract_id"])
        else:
            two.apply(0, payload, now)
        if two.terms_changed:
            two.rederive_changed_terms(now)
    now = datetime(2026, 12, 1, tzinfo=UTC)  # every period with usage has closed
    two.close_due(now)

    want = final_picture(book, ledger_of(deltas), reports)
    closed = {(r["contract_id"], r["period_key"]): r for r in effects["period_closed"]}
    assert len(closed) == len(effects["period_closed"]), "a period closed twice"
    got: dict[tuple[str, str], list[dict[str, Any]]] = {k: list(r["lines"]) for k, r in closed.items()}
    for a in effects["adjustment"]:
        got[(a["contract_id"], a["corrects_period_key"])].append(a)
    ids = [a["adjustment_id"] for a in effects["adjustment"]]
    assert len(ids) == len(set(ids)), "an adjustment id twice"
    for where, lines in want.items():
        if lines:
            assert where in closed, f"{where} never closed"
            period = period_by_key(where[1], TZ, book.contracts[where[0]].period_kind)
            assert close_time(period, timedelta(hours=2)) <= now
    for where in set(got) | set(want):
        assert _points(got.get(where, [])) == want.get(where, {}), where
    outcomes = [o["status"] for o in effects["ivt_report_outcome"]]
    assert outcomes.count("duplicate") == (1 if reports else 0)
