"""Tally metering: running billable totals per contract and billing period, exact through crashes."""
