"""Where a re-rating's time goes, in-process and without Kafka: ``derive`` over the ledger of
``bench/run.py --only rerate`` (1,000 campaigns x New York's January, every 15-minute bucket
populated, one givt impression per campaign and local day), under the amended contract.

Prints the time of ``tally_billing.ledger.derive`` with an empty route cache (as after a
terms record is applied), how many routes it computes (one per campaign and run of buckets in
which every candidate contract keeps its segment and period), the cost of one route miss, and
what one ``TotalsStore.mark`` of a full ledger day costs (stage two marks a day once per delta).

Run: ``.venv/bin/python bench/rerate_derive.py [campaigns]``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tally_billing import routing as contracts_module
from tally_billing.examples import cpm_terms_json
from tally_billing.routing import ContractBook, Route
from tally_billing.terms import parse_terms, terms_to_json
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY
from tally_metering import domain as d

MONTH_START = datetime(2026, 1, 1, 5, tzinfo=UTC)
MID = datetime(2026, 1, 16, 5, tzinfo=UTC)
DAY_US = 86_400_000_000


def terms(campaigns: list[str], rate: str) -> str:
    t = cpm_terms_json()
    t["common"].update({"currency": "USD", "time_zone": "America/New_York", "billing_period": "month",
                        "flight_start": "2026-01-01", "flight_end": "2026-01-31", "campaign_ids": campaigns,
                        "advertiser_id": "adv-rr", "auto_renew": False, "renewal_term_months": None,
                        "notice_period_days": 0, "escalator_pct": None, "committed_value": None})
    t["cpm"] = {"rate_card": {"kind": "flat", "tier_basis": "period", "bands": [{"from_impressions": 0, "rate_cpm": rate}]},
                "budget_caps": {"total": None, "per_period": None}, "minimum_commitment_per_period": None}
    return json.dumps(terms_to_json(parse_terms(t)))


def ledger(campaigns: list[str]) -> list[d.UsageDay]:
    days: dict[tuple[str, int], d.UsageDay] = {}
    start_bucket = int(MONTH_START.timestamp()) * 1_000_000 // BUCKET_US
    for ci, c in enumerate(campaigns):
        for b in range(start_bucket, start_bucket + 31 * BUCKETS_PER_DAY):
            day, i = divmod(b, BUCKETS_PER_DAY)
            u = days.get((c, day))
            if u is None:
                u = days[(c, day)] = d.UsageDay("adv-rr", c, day, offsets={f"imp\x1f{p}": 1000 + p for p in range(8)})
            u.add(i, "none|first_party", 1)
            u.max_event_us = max(u.max_event_us, b * BUCKET_US + 1)
            local_day = (b - start_bucket) // BUCKETS_PER_DAY
            if (b - start_bucket) % BUCKETS_PER_DAY == (ci * 37 + local_day * 11) % 96:
                u.add(i, "givt|first_party", 1)
    return [days[k] for k in sorted(days)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    campaigns = [f"cmp-{i:04d}" for i in range(n)]
    book = ContractBook()
    book.apply({"contract_id": "C", "advertiser_id": "adv-rr", "contract_type": "cpm", "revision": 2, "terminated_at": None,
                "versions": [{"version": 1, "effective_from": MONTH_START, "effective_to": MID, "terms_json": terms(campaigns, "10.00")},
                             {"version": 2, "effective_from": MID, "effective_to": None, "terms_json": terms(campaigns, "12.00")}]})
    t = time.perf_counter()
    days = ledger(campaigns)
    print(f"ledger: {len(days):,} days, {sum(len(u.counts) for u in days):,} rows, built in {time.perf_counter() - t:.1f} s")

    calls = {"route": 0, "_route": 0}
    route, _route = ContractBook.route, ContractBook._route

    def counting_route(self: ContractBook, *a: Any) -> Route | None:
        calls["route"] += 1
        return route(self, *a)

    def counting__route(*a: Any) -> Route | None:
        calls["_route"] += 1
        return _route(*a)

    ContractBook.route = counting_route  # type: ignore[method-assign]
    ContractBook._route = staticmethod(counting__route)  # type: ignore[method-assign]
    book.routes = {}
    d.derive(book, days)
    ContractBook.route, ContractBook._route = route, staticmethod(_route)  # type: ignore[method-assign]
    print(f"derive: {calls['route']:,} route lookups, {calls['_route']:,} computed (route cache max "
          f"{contracts_module._ROUTE_CACHE_MAX:,} entries, emptied by every terms record)")

    for name, fn in (("derive (the service)", d.derive),):
        times = []
        for _ in range(3):
            book.routes = {}
            t = time.perf_counter()
            result = fn(book, days)
            times.append(time.perf_counter() - t)
        print(f"{name}: {min(times) * 1000:,.0f} ms (best of 3)")
        if name.startswith("derive_by_runs"):
            book.routes = {}
            want = d.derive(book, days)
            same = {k: (v.counts, v.in_scope_by_version, v.max_event_us, v.offsets) for k, v in result.items()} == \
                   {k: (v.counts, v.in_scope_by_version, v.max_event_us, v.offsets) for k, v in want.items()}
            print(f"  identical totals: {same}")

    # one route miss: what derive pays per (campaign, hour) after the cache was emptied
    book.routes = {}
    hours = [(c, MONTH_START + timedelta(hours=h)) for c in campaigns[:100] for h in range(744)]
    t = time.perf_counter()
    for c, at in hours:
        book.route("adv-rr", c, int(at.timestamp()) * 1_000_000)
    print(f"one route miss: {(time.perf_counter() - t) / len(hours) * 1e6:.1f} µs")

    # stage two marks a ledger day once per usage row: one JSON encoding of the whole day per row
    u = days[len(days) // 2]
    t = time.perf_counter()
    for _ in range(10_000):
        json.dumps(u.to_json(), separators=(",", ":")).encode()
    print(f"TotalsStore.mark of a full ledger day: {(time.perf_counter() - t) / 10_000 * 1e6:.1f} µs per usage row")


if __name__ == "__main__":
    main()
