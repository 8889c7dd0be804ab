"""The usage ledger's time grid: 15-minute event-time buckets.

Usage (impressions counted per campaign, IVT class and measurement source) is kept apart from
contracts, in buckets of event time, so it can be rated — and re-rated — against whatever
contract picture holds later. A bucket is never split by a contract boundary: version starts,
flight ends, terminations and billing periods all fall on local midnights, and every UTC
offset a zone has used since 1990 is a whole multiple of 15 minutes (asserted against every
zone ``zoneinfo`` knows in ``tests/unit/billing/test_billing_usage.py``), so every local
midnight is a bucket boundary in UTC. A boundary that is not (a hand-made instant) gives the
whole bucket to the side its start lies on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "BUCKET",
    "BUCKETS_PER_DAY",
    "BUCKET_US",
    "DAY_US",
    "bucket_of",
    "bucket_start",
    "from_micros",
    "is_bucket_boundary",
    "to_micros",
]

BUCKET = timedelta(minutes=15)
BUCKET_US = 15 * 60 * 1_000_000
DAY_US = 86_400_000_000
BUCKETS_PER_DAY = DAY_US // BUCKET_US  # 96

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(instant: datetime) -> int:
    """Microseconds since the Unix epoch of an aware instant (exact, no float)."""
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant.isoformat()} is not an instant")
    d = instant.astimezone(UTC) - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def bucket_of(t_us: int) -> int:
    """The index of the bucket holding ``t_us`` (buckets count from the epoch)."""
    return t_us // BUCKET_US


def bucket_start(bucket: int) -> int:
    return bucket * BUCKET_US


def is_bucket_boundary(instant: datetime) -> bool:
    return to_micros(instant) % BUCKET_US == 0
