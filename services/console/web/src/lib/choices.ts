/** The choices for currency and time zone pickers, from the browser's own ISO 4217 and IANA tables. */

const FALLBACK_CURRENCIES = ["AUD", "BHD", "CAD", "CHF", "EUR", "GBP", "JPY", "USD"]
const FALLBACK_ZONES = ["America/New_York", "Europe/Berlin", "Europe/London", "UTC"]

function supported(kind: "currency" | "timeZone", fallback: string[]): string[] {
  try {
    return Intl.supportedValuesOf(kind)
  } catch {
    return fallback
  }
}

let currencies: { code: string; label: string }[] | null = null
let zones: string[] | null = null

/** ISO 4217 codes with their English names ("EUR — Euro"). */
export function currencyChoices(): { code: string; label: string }[] {
  if (!currencies) {
    const names = new Intl.DisplayNames(["en"], { type: "currency" })
    currencies = supported("currency", FALLBACK_CURRENCIES).map((code) => ({ code, label: `${code} — ${names.of(code) ?? code}` }))
  }
  return currencies
}

/** IANA zone names; UTC is always offered (some engines list only Etc/UTC or nothing for it). */
export function timeZoneChoices(): string[] {
  if (!zones) {
    const list = supported("timeZone", FALLBACK_ZONES)
    zones = list.includes("UTC") ? list : [...list, "UTC"].sort()
  }
  return zones
}

/** A current value the tables lack is still offered, so a picker never silently changes it. */
export function withValue<T>(choices: T[], value: string, make: (v: string) => T, key: (t: T) => string): T[] {
  return value === "" || choices.some((c) => key(c) === value) ? choices : [make(value), ...choices]
}
