"""Volume rate card: the band reached by the basis count prices every unit.

``reached`` is the basis count at the end of the period (or, for a running total, so far);
all ``units`` are priced at the rate of the band containing position ``reached - 1``.
"""

from __future__ import annotations

from tally_billing.rating import Slice, band_index_at
from tally_billing.terms import RateBand


def rate(bands: tuple[RateBand, ...], *, before: int, units: int, reached: int) -> list[Slice]:
    del before
    if units <= 0:
        return []
    i = band_index_at(bands, max(reached - 1, 0))
    return [Slice(i, bands[i].rate_cpm, units)]
