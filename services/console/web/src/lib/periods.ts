/** Billing-period arithmetic for display: when an open period ends, in the contract's zone. */

/** Metering closes a period this long after it ends (late events still count). */
export const CLOSE_GRACE_MS = 2 * 3600 * 1000

/** The zone's offset from UTC at an instant, in ms (Berlin in winter: +3 600 000). */
export function zoneOffsetMs(zone: string, at_ms: number): number {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(at_ms))
  const n = (type: string) => Number(parts.find((p) => p.type === type)?.value ?? "0")
  const asUtc = Date.UTC(n("year"), n("month") - 1, n("day"), n("hour") % 24, n("minute"), n("second"))
  return asUtc - Math.floor(at_ms / 1000) * 1000
}

/** The UTC instant of a local midnight (`year`, `month` 1–12, `day`) in a zone. */
export function localMidnightUtcMs(zone: string, year: number, month: number, day: number): number {
  const wall = Date.UTC(year, month - 1, day)
  // two passes settle the offset even when the midnight is near a DST change
  let at = wall - zoneOffsetMs(zone, wall)
  at = wall - zoneOffsetMs(zone, at)
  return at
}

/**
 * The end of a monthly period (`YYYY-MM`) as an instant: the next month's first midnight in the
 * contract's zone. Null for keys that are not months (weekly periods are not previewed yet).
 */
export function periodEndMs(periodKey: string, zone: string): number | null {
  const m = /^(\d{4})-(\d{2})$/.exec(periodKey)
  if (!m) return null
  const year = Number(m[1])
  const month = Number(m[2])
  return month === 12 ? localMidnightUtcMs(zone, year + 1, 1, 1) : localMidnightUtcMs(zone, year, month + 1, 1)
}
