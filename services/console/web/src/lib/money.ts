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

export function formatPercent(basisPoints: number | null): string {
  if (basisPoints === null) return "—"
  return `${(basisPoints / 100).toFixed(1)} %`
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return "—"
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  return d.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" })
}
