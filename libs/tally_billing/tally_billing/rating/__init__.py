"""Rate-card pricing models, one module each: flat, graduated, volume.

Each turns a count of units into :class:`Slice` s — (band, rate, units) — given the position
on the tier basis before the units (``before``) and the position the basis reaches
(``reached``).  Slices hold counts and rates, never money; amounts are derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tally_billing.terms import RateBand

__all__ = ["Slice", "band_index_at"]


@dataclass(frozen=True)
class Slice:
    band_index: int
    rate: Decimal
    units: int


def band_index_at(bands: tuple[RateBand, ...], position: int) -> int:
    """Index of the band that prices the unit at zero-based ``position`` on the tier basis."""
    index = 0
    for i, band in enumerate(bands):
        if band.from_impressions <= position:
            index = i
    return index
