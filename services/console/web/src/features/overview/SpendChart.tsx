import { compareDecimals, scaleToPixels } from "../../lib/decimal"
import { formatMoney } from "../../lib/money"

export interface ChartPoint {
  at: number
  value: string
}

const W = 560
const H = 140
const PAD = 8

/** A small line chart of running spend; values stay decimal strings (pixels are computed exactly). */
export function SpendChart({ currency, points }: { currency: string; points: ChartPoint[] }) {
  const latest = points.at(-1)?.value ?? "0"
  const max = points.reduce((m, p) => (compareDecimals(p.value, m) > 0 ? p.value : m), "0")
  const n = points.length
  const x = (i: number) => PAD + (n <= 1 ? W - 2 * PAD : (i * (W - 2 * PAD)) / (n - 1))
  const y = (v: string) => H - PAD - scaleToPixels(v, max, H - 2 * PAD)
  const path = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${y(p.value)}`).join(" ")
  const label = `Running spend in ${currency}: ${formatMoney(latest, currency)} after ${n} update${n === 1 ? "" : "s"}`
  return (
    <figure className="chart">
      <figcaption>
        <span>{currency}</span> <strong data-testid={`spend-total-${currency}`}>{formatMoney(latest, currency)}</strong>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={label} preserveAspectRatio="none">
        <line x1={PAD} y1={H - PAD} x2={W - PAD} y2={H - PAD} className="axis" />
        {n > 0 && <path d={path} className="line" fill="none" />}
        {n > 0 && <circle cx={x(n - 1)} cy={y(latest)} r={4} className="dot" />}
      </svg>
    </figure>
  )
}
