"""Running totals carry the open period's partner payouts (``running_total`` v2), exactly as the
close will: the last running total of a period and its ``period_closed`` agree on every payout."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from tally_billing.cpa import price_conversion
from tally_billing.examples import cpa_terms_json
from tally_billing.routing import ContractBook
from tally_billing.usage import to_micros
from tally_metering.engine import StageTwo
from tally_metering.metrics import WorkerMetrics
from tally_metering.state import TotalsStore
from tally_streams.avro import SchemaCatalog

ADV = "adv-earn"
CID = "K-earn"
TZ = "Europe/Berlin"
SETTINGS = SimpleNamespace(metering_grace_seconds=7200, metering_rerate_horizon_days=400, metering_totals_interval_ms=1000,
                           metering_topic_impressions="imp", metering_topic_deltas="deltas",
                           metering_topic_terms="terms", metering_delta_partitions=1)
JAN1 = datetime(2025, 12, 31, 23, tzinfo=UTC)  # local midnight, 1 January 2026


def contract_record() -> dict[str, Any]:
    t = cpa_terms_json()
    t["common"].update(advertiser_id=ADV, time_zone=TZ, flight_start="2026-01-01", flight_end="2026-12-31",
                       campaign_ids=["c1"], auto_renew=False, renewal_term_months=None)
    # a percentage payout of odd order values: amounts beyond the cent, which must stay exact
    t["cpa"]["payouts"][0]["partner_payout"] = {"kind": "percent", "percent": "6.25"}
    t["cpa"]["partner_overrides"] = []
    return {"contract_id": CID, "advertiser_id": ADV, "contract_type": "cpa", "revision": 1, "terminated_at": None,
            "versions": [{"version": 1, "effective_from": JAN1, "effective_to": None, "terms_json": json.dumps(t)}]}


def conversion(cid: str, at: datetime, event_type: str, partner: str | None, order_value: Decimal | None,
               position: int, book: ContractBook) -> dict[str, Any]:
    """As stage one sends it on the deltas topic (``worker._conversion_json``), priced by the terms."""
    contract = book.get(CID)
    assert contract is not None
    cpa = contract.versions[0].terms.cpa
    assert cpa is not None
    p = price_conversion(cpa, event_type=event_type, partner_id=partner or "", order_value=order_value,
                         local_date=at.date(), prior_event_type_count=position)
    return {"conversion_id": cid, "kind": "conversion", "original_conversion_id": None, "contract_id": CID,
            "contract_version": 1, "advertiser_id": ADV, "partner_id": partner, "event_type": event_type,
            "event_time_us": to_micros(at), "original_event_time_us": None,
            "advertiser_amount": str(p.advertiser_amount), "partner_payout": str(p.partner_amount),
            "order_value": None if order_value is None else str(order_value), "tier_position": position,
            "reversal_completes": None}


def test_the_last_running_total_and_the_close_agree_on_every_payout() -> None:
    effects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    book = ContractBook()
    two = StageTwo(SETTINGS, book, lambda kind, rec, key: effects[kind].append(rec), WorkerMetrics())
    two.stores[0] = TotalsStore(0)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    book.apply(contract_record())
    two.terms_changed.add(CID)
    two.rederive_changed_terms(now)
    plan = [("purchase", "p1", Decimal("33.33")), ("purchase", "p2", Decimal("19.99")), ("signup", "p1", None),
            ("purchase", "p1", Decimal("0.07")), ("signup", None, None), ("signup", "p2", None)]
    counts: dict[str, int] = defaultdict(int)
    for k, (event_type, partner, value) in enumerate(plan):
        at = datetime(2026, 1, 10 + k, 12, tzinfo=UTC)
        rec = conversion(f"c{k}", at, event_type, partner, value, counts[event_type], book)
        counts[event_type] += 1
        two.apply(0, {"kind": "cpa", "src": {"topic": "att", "partition": 0, "offset": k}, "rec": rec}, now)
        two.last_published.clear()  # no throttle here: every change publishes
        two.close_and_publish(now)
    opens = [t for t in effects["running_total"] if t["status"] == "open"]
    assert len(opens) == len(plan)
    last_open = opens[-1]
    # the payouts so far: p1 6.25 % of 33.33 and of 0.07 plus a 2.50 signup; p2 6.25 % of 19.99 plus 2.50
    by_partner: dict[str, Decimal] = defaultdict(Decimal)
    for p in last_open["payouts"]:
        by_partner[p["partner_id"]] += p["amount_exact"]
    assert by_partner == {"p1": Decimal("2.083125") + Decimal("0.004375") + Decimal("2.50"),
                          "p2": Decimal("1.249375") + Decimal("2.50")}
    assert all(p["partner_id"] is not None for p in last_open["payouts"])  # the unattributed signup pays no one

    two.close_due(datetime(2026, 2, 2, tzinfo=UTC))
    (closed,) = effects["period_closed"]
    assert closed["payouts"] == last_open["payouts"]
    two.last_published.clear()
    two.close_and_publish(datetime(2026, 2, 2, tzinfo=UTC))
    after = effects["running_total"][-1]
    assert after["status"] == "closed" and after["payouts"] == closed["payouts"]

    # both go over the wire as the schemas say, and decode to the same payouts
    catalog = SchemaCatalog.load()
    wire_total = catalog.codec("running_total").decode(catalog.codec("running_total").encode(last_open))
    wire_close = catalog.codec("period_closed").decode(catalog.codec("period_closed").encode(closed))
    assert wire_total["payouts"] == wire_close["payouts"]


def test_a_cpm_total_carries_no_payouts_and_old_readers_skip_the_field() -> None:
    catalog = SchemaCatalog.load()
    t = datetime(2026, 3, 1, 5, tzinfo=UTC)
    rec = {"total_id": "K/2026-03", "contract_id": "K", "advertiser_id": "a", "contract_type": "cpm", "currency": "USD",
           "time_zone": "UTC", "period_kind": "month", "period_key": "2026-03", "period_start": t,
           "period_end": datetime(2026, 4, 1, tzinfo=UTC), "status": "open", "amount_exact": Decimal("1.5"),
           "budget_cap_per_period": None, "budget_cap_total": None, "minimum_commitment": None, "lines": [],
           "counts": {}, "latest_event_time": None, "updated_at": t}
    v1_bytes = catalog.codec("running_total", 1).encode(rec)
    assert catalog.codec("running_total").decode(v1_bytes)["payouts"] == []  # new reader, old data
    v2 = {**rec, "payouts": [{"partner_id": "p", "contract_version": 1, "event_type": "purchase", "quantity": 2,
                              "amount_exact": Decimal("0.000000000001")}]}
    old = catalog.codec("running_total", 1).decode(catalog.codec("running_total").encode(v2))
    assert "payouts" not in old and old["amount_exact"] == Decimal("1.5")  # old reader, new data
