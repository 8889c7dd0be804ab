"""ContractBook.route: the (campaign, hour) cache gives exactly what classifying each instant gives."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from tally_billing.examples import cpm_terms_json
from tally_billing.routing import ROUTE_BUCKET_US, ContractBook, contract_from_record, to_micros

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _contract(cid: str, zone: str, campaigns: list[str], flight: tuple[str, str], v2_from: datetime | None,
              v2_campaigns: list[str] | None = None, v2_measurement: str = "first_party") -> Any:
    t = cpm_terms_json()
    t["common"].update(time_zone=zone, campaign_ids=campaigns, flight_start=flight[0], flight_end=flight[1])
    versions = [{"version": 1, "effective_from": T0, "effective_to": None, "approved_at": T0, "terms_json": json.dumps(t)}]
    if v2_from is not None:
        t2 = json.loads(json.dumps(t))
        t2["common"].update(campaign_ids=v2_campaigns or campaigns, measurement=v2_measurement)
        versions.append({"version": 2, "effective_from": v2_from, "effective_to": None, "approved_at": v2_from,
                         "terms_json": json.dumps(t2)})
    return contract_from_record({"contract_id": cid, "advertiser_id": "adv-acme", "contract_type": "cpm",
                                 "revision": 1, "terminated_at": None, "versions": versions})


def test_cached_routes_equal_per_instant_classification() -> None:
    book = ContractBook()
    # a version change at an odd instant, zones with :45 and :30 offsets (period ends inside a UTC hour),
    # a flight ending, two contracts sharing a campaign with different flights and measurement
    v2 = datetime(2026, 3, 15, 10, 17, 33, 123456, tzinfo=UTC)
    book.load([
        _contract("K-kathmandu", "Asia/Kathmandu", ["cmp-1", "cmp-2"], ("2026-01-01", "2026-03-31"), v2,
                  v2_campaigns=["cmp-1"], v2_measurement="third_party"),
        _contract("K-adelaide", "Australia/Adelaide", ["cmp-2", "cmp-3"], ("2026-03-20", "2026-12-31"), None),
        _contract("K-ny", "America/New_York", ["cmp-3"], ("2026-01-01", "2026-12-31"), v2),
    ])
    edges = [v2, datetime(2026, 3, 31, 18, 15, tzinfo=UTC), datetime(2026, 3, 31, 13, 30, tzinfo=UTC),
             datetime(2026, 3, 19, 13, 30, tzinfo=UTC), datetime(2026, 4, 1, 4, tzinfo=UTC),
             datetime(2026, 3, 8, 7, tzinfo=UTC)]
    rng = random.Random(5)
    instants = [to_micros(e) + k for e in edges for k in (-ROUTE_BUCKET_US, -1, 0, 1, ROUTE_BUCKET_US - 1)]
    base = to_micros(datetime(2026, 3, 1, tzinfo=UTC))
    instants += [base + rng.randrange(45 * 86_400_000_000) for _ in range(20_000)]
    rng.shuffle(instants)
    for campaign in ("cmp-1", "cmp-2", "cmp-3", "cmp-unknown"):
        for t in instants:
            got = book.route("adv-acme", campaign, t)
            want = ContractBook._route(book._by_campaign.get(("adv-acme", campaign), ()), campaign, t)
            assert got == want, (campaign, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t))
    assert book.routes  # the cache was used
    # an hour holding a version change or a period end is never cached
    assert ("adv-acme", "cmp-1", to_micros(v2) // ROUTE_BUCKET_US) not in book.routes
    assert ("adv-acme", "cmp-2", to_micros(datetime(2026, 3, 31, 18, 15, tzinfo=UTC)) // ROUTE_BUCKET_US) not in book.routes
    assert book.route("adv-other", "cmp-1", to_micros(v2)) is None  # another advertiser's campaign reaches no contract
    book.load([])
    assert not book.routes  # any change to the book empties the cache


def test_period_at_from_known_spans_equals_zone_arithmetic() -> None:
    from tally_billing.periods import period_containing
    from tally_billing.routing import from_micros

    rng = random.Random(9)
    c = _contract("K-kathmandu", "Asia/Kathmandu", ["cmp-1"], ("2026-01-01", "2026-12-31"), None)
    bucket = 15 * 60 * 1_000_000
    base = to_micros(datetime(2026, 1, 1, tzinfo=UTC))
    instants = [base + rng.randrange(400 * 86_400_000_000) for _ in range(5_000)]
    instants += [to_micros(datetime(2026, m, 1, tzinfo=UTC) - timedelta(hours=5, minutes=45)) + k
                 for m in range(2, 13) for k in (-bucket, -1, 0, 1)]
    for t in instants:
        want = period_containing(from_micros(t // bucket * bucket), "Asia/Kathmandu", c.period_kind)
        assert c.period_at(t) == want, from_micros(t)
    assert len(c._spans) >= 12  # one zone computation per period, not per bucket
