"""Test fixture for the browser test: publish the closed period of one contract on
``billing.periods_closed``, as metering does at period end + grace (a month cannot pass in a test).

argv: topic contract_id advertiser_id currency period_key impressions rate_cpm
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from decimal import Decimal

from tally_billing.cpm import impressions_amount
from tally_billing.periods import PeriodKind, period_by_key
from tally_streams.avro import SchemaCatalog
from tally_streams.kafka import SyncProducer, producer_config


def main() -> None:
    topic, contract_id, advertiser_id, currency, period_key, impressions, rate = sys.argv[1:8]
    if not contract_id.startswith("ctr_") or not topic.startswith("e2e-"):
        raise SystemExit(f"refusing to publish: contract {contract_id!r} on topic {topic!r} (only a test run's own topic)")
    now = datetime.now(UTC)
    period = period_by_key(period_key, "America/New_York", PeriodKind.MONTH)
    quantity = int(impressions)
    rate_cpm = Decimal(rate)
    record = {
        "close_id": f"{contract_id}/{period_key}", "contract_id": contract_id, "advertiser_id": advertiser_id,
        "contract_type": "cpm", "currency": currency, "time_zone": "America/New_York", "period_kind": "month",
        "period_key": period_key, "period_start": period.start, "period_end": period.end,
        "closed_at": now, "payment_terms_days": 30, "po_reference": "PO-E2E", "minimum_commitment": None,
        "lines": [{"line_type": "cpm_impressions", "contract_version": 1, "price_point": "band:0", "event_type": None,
                   "quantity": quantity, "unit": "per_thousand", "unit_price": rate_cpm,
                   "amount_exact": impressions_amount(quantity, rate_cpm)}],
        "payouts": [], "counts": {"received": quantity, "billable": quantity}, "source_offsets": [],
    }
    producer = SyncProducer(producer_config(os.environ.get("TALLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")), SchemaCatalog.load())
    producer.produce(topic, "period_closed", record, key=contract_id)
    producer.flush()


if __name__ == "__main__":
    main()
