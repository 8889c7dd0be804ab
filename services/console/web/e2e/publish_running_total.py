"""Test fixture for the browser test: publish the open period's running total of one CPA contract
on the run's ``billing.running_totals`` topic, as metering does (``running_total`` v2, with the
partners' payouts). The console stack runs attribution's ingest API but not its processor, so no
conversion is attributed there; metering's own part (payouts in every total, the same as the
close) is tested in tests/unit/metering/test_metering_running_payouts.py.

argv: topic contract_id advertiser_id time_zone period_key partner_id payout other_partner other_payout price
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from decimal import Decimal

from tally_billing.periods import PeriodKind, period_by_key
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import SyncProducer, producer_config


def main() -> None:
    topic, contract_id, advertiser_id, time_zone, period_key, partner, payout, other, other_payout, price = sys.argv[1:11]
    if not contract_id.startswith("ctr_") or not topic.startswith("e2e-"):
        raise SystemExit(f"refusing to publish: contract {contract_id!r} on topic {topic!r} (only a test run's own topic)")
    now = datetime.now(UTC)
    period = period_by_key(period_key, time_zone, PeriodKind.MONTH)
    amount = Decimal(price) * 2
    record = {
        "total_id": f"{contract_id}/{period_key}", "contract_id": contract_id, "advertiser_id": advertiser_id,
        "contract_type": "cpa", "currency": "USD", "time_zone": time_zone, "period_kind": "month",
        "period_key": period_key, "period_start": period.start, "period_end": period.end, "status": "open",
        "amount_exact": amount, "budget_cap_per_period": None, "budget_cap_total": None, "minimum_commitment": None,
        "lines": [{"line_type": "cpa_conversions", "contract_version": 1, "price_point": "event:purchase",
                   "event_type": "purchase", "quantity": 2, "unit": "per_unit", "unit_price": Decimal(price),
                   "amount_exact": amount}],
        "payouts": [
            {"partner_id": partner, "contract_version": 1, "event_type": "purchase", "quantity": 1,
             "amount_exact": Decimal(payout)},
            {"partner_id": other, "contract_version": 1, "event_type": "purchase", "quantity": 1,
             "amount_exact": Decimal(other_payout)},
        ],
        "counts": {"conversions_attributed": 2}, "latest_event_time": now, "updated_at": now,
    }
    producer = SyncProducer(producer_config(os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")), SchemaCatalog.load())
    producer.produce(topic, "running_total", record, key=record["total_id"])
    producer.flush()


if __name__ == "__main__":
    main()
