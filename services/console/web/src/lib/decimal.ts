/**
 * Exact decimal strings → scaled BigInts, for the little arithmetic the console does
 * (budget burn, chart scaling). Money is never parsed into a float.
 */
export const SCALE = 12
const DECIMAL = /^([+-])?(\d+)(?:\.(\d+))?$/

export class NotADecimal extends Error {}

/** `"12.5"` → 12_500_000_000_000n (12 decimal places). Extra places beyond 12 are truncated toward zero. */
export function toScaled(value: string): bigint {
  const m = DECIMAL.exec(value.trim())
  if (!m) throw new NotADecimal(`${JSON.stringify(value)} is not a decimal string`)
  const [, sign, int = "0", frac = ""] = m
  const digits = BigInt(int + frac.slice(0, SCALE).padEnd(SCALE, "0"))
  return sign === "-" ? -digits : digits
}

export function isDecimal(value: string): boolean {
  return DECIMAL.test(value.trim())
}

export function fromScaled(value: bigint): string {
  const negative = value < 0n
  const digits = (negative ? -value : value).toString().padStart(SCALE + 1, "0")
  const int = digits.slice(0, -SCALE)
  const frac = digits.slice(-SCALE).replace(/0+$/, "")
  return `${negative ? "-" : ""}${int}${frac ? "." + frac : ""}`
}

export function addDecimals(a: string, b: string): string {
  return fromScaled(toScaled(a) + toScaled(b))
}

export function compareDecimals(a: string, b: string): number {
  const d = toScaled(a) - toScaled(b)
  return d === 0n ? 0 : d < 0n ? -1 : 1
}

/** part / whole in basis points (1 % = 100), floored; null when whole is zero. */
export function ratioBasisPoints(part: string, whole: string): number | null {
  const w = toScaled(whole)
  if (w === 0n) return null
  return Number((toScaled(part) * 10_000n) / w)
}

/** A value's position on a 0..max axis in whole pixels (display only). */
export function scaleToPixels(value: string, max: string, pixels: number): number {
  const m = toScaled(max)
  if (m <= 0n) return 0
  return Number((toScaled(value) * BigInt(pixels)) / m)
}

/**
 * Round axis ticks from 0 to at least `max` (about `count` steps of 1, 2 or 5 × a power of ten),
 * as decimal strings: exact, so an axis label never shows a float's noise.
 */
export function niceTicks(max: string, count = 4): string[] {
  const m = toScaled(max)
  if (m <= 0n) return ["0"]
  const raw = (m + BigInt(count) - 1n) / BigInt(count)
  let power = 1n
  while (power * 10n <= raw) power *= 10n
  const step = [1n, 2n, 5n, 10n].map((k) => k * power).find((s) => s >= raw) ?? 10n * power
  const ticks: string[] = []
  for (let v = 0n; ; v += step) {
    ticks.push(fromScaled(v))
    if (v >= m) break
  }
  return ticks
}
