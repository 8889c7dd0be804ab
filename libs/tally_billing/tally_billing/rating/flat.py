"""Flat rate card: one band, every unit at its rate."""

from __future__ import annotations

from tally_billing.rating import Slice
from tally_billing.terms import RateBand


def rate(bands: tuple[RateBand, ...], *, before: int, units: int, reached: int) -> list[Slice]:
    del before, reached  # a flat card has no tiers
    if units <= 0:
        return []
    return [Slice(0, bands[0].rate_cpm, units)]
