/**
 * Money for display: a decimal string in its currency, with the currency's minor units
 * (USD 2, JPY 0, BHD 3). Intl.NumberFormat formats the string itself (no float on the way),
 * rounding half-even like billing does.
 */
const formatters = new Map<string, Intl.NumberFormat>()

function formatter(currency: string): Intl.NumberFormat {
  let f = formatters.get(currency)
  if (!f) {
    const probe = new Intl.NumberFormat("en-US", { style: "currency", currency })
    const digits = probe.resolvedOptions().maximumFractionDigits ?? 2
    f = new Intl.NumberFormat("en-US", {
      style: "currency",
      currency,
      currencyDisplay: "code",
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
      roundingMode: "halfEven",
    })
    formatters.set(currency, f)
  }
  return f
}

/** Minor units of an ISO 4217 currency (2 when the browser does not know it). */
export function minorUnits(currency: string): number {
  try {
    return formatter(currency).resolvedOptions().maximumFractionDigits ?? 2
  } catch {
    return 2
  }
}

type StringFormat = (value: string) => string

export function formatMoney(amount: string | null | undefined, currency: string | null | undefined): string {
  if (amount === null || amount === undefined || amount === "") return "—"
  if (!currency) return amount
  try {
    // ES2023 Intl.NumberFormat formats decimal strings exactly
    return (formatter(currency).format as unknown as StringFormat)(amount)
  } catch {
    return `${amount} ${currency}`
  }
}

/**
 * Basis points as a percentage with one decimal, floored: 99.99 % is "99.9 %", never "100.0 %",
 * so the figure never claims a threshold (and its alert) that the spend has not reached.
 */
export function formatPercent(basisPoints: number | null): string {
  if (basisPoints === null) return "—"
  const tenths = Math.floor(basisPoints / 10)
  return `${Math.trunc(tenths / 10)}.${Math.abs(tenths % 10)} %`
}

/**
 * An instant as a date and time. With a zone (the contract's), it is shown in that zone and
 * labelled with it ("1 Dec 2026, 00:00 EST"); without one, in the viewer's zone, labelled too.
 */
export function formatDateTime(iso: string | null | undefined, zone?: string | null): string {
  if (!iso) return "—"
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  const timeZone = zone && isTimeZone(zone) ? zone : undefined
  const text = d.toLocaleString("en-GB", { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone })
  return `${text} ${zoneLabel(d, timeZone)}`
}

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone })
    return true
  } catch {
    return false
  }
}

/** "EST", "EDT", "GMT+1", "UTC": the zone's short name at that instant (US English knows the most abbreviations). */
export function zoneLabel(at: Date, zone?: string): string {
  const part = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "short" }).formatToParts(at).find((p) => p.type === "timeZoneName")
  return part?.value ?? zone ?? ""
}

/** The day only ("1 Dec 2026"), in a zone when one is given. */
export function formatDate(iso: string | null | undefined, zone?: string | null): string {
  if (!iso) return "—"
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  return d.toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric", timeZone: zone && isTimeZone(zone) ? zone : undefined })
}
