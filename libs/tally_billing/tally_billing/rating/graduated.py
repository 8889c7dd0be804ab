"""Graduated rate card: each band prices only the units that fall inside it.

Units occupy positions ``[before, before + units)`` on the tier basis; the part of that range
inside band *i* is priced at band *i*'s rate.  A tier crossed inside one batch splits the batch.
"""

from __future__ import annotations

from tally_billing.rating import Slice
from tally_billing.terms import RateBand


def rate(bands: tuple[RateBand, ...], *, before: int, units: int, reached: int) -> list[Slice]:
    del reached  # graduated pricing depends only on where the units sit
    out: list[Slice] = []
    end = before + units
    for i, band in enumerate(bands):
        band_start = band.from_impressions
        band_end = bands[i + 1].from_impressions if i + 1 < len(bands) else None
        lo = max(before, band_start)
        hi = end if band_end is None else min(end, band_end)
        if hi > lo:
            out.append(Slice(i, band.rate_cpm, hi - lo))
    return out
