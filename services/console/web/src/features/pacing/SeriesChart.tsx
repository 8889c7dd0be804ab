import { useState, type KeyboardEvent } from "react"
import { compareDecimals, niceTicks, scaleToPixels } from "../../lib/decimal"
import { formatDateTime, formatMoney } from "../../lib/money"
import type { Granularity, SeriesPoint } from "./types"

const W = 640
const H = 240
const LEFT = 84
const RIGHT = 12
const TOP = 12
const BOTTOM = 34
/** up to this many buckets, each gets a marker */
const MARKERS_MAX = 62

/** A bucket's start as an axis label in the contract's zone: "2 Dec" for days, "2 Dec 14h" for hours. */
function tickLabel(iso: string, zone: string | undefined, granularity: Granularity): string {
  const d = new Date(iso)
  const day = d.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: zone })
  if (granularity === "day") return day
  const hour = d.toLocaleTimeString("en-GB", { hour: "2-digit", hourCycle: "h23", timeZone: zone })
  return `${day} ${hour}h`
}

/**
 * Cumulative spend of one period, per hour or per local day, with a money axis, a time axis in the
 * contract's zone, the per-period cap as a line when it is in range, and the values of the bucket
 * under the pointer (or chosen with the arrow keys). Values stay decimal strings; pixels are exact.
 */
export function SeriesChart({ points, currency, zone, granularity, cap }: {
  points: SeriesPoint[]
  currency: string
  zone: string | undefined
  granularity: Granularity
  cap: string | null | undefined
}) {
  const [active, setActive] = useState<number | null>(null)
  const n = points.length
  const peak = points.reduce((m, p) => (compareDecimals(p.cumulative_spend, m) > 0 ? p.cumulative_spend : m), "0")
  // the cap is drawn when the spend is within sight of it (at least a tenth of it), else only named
  const capInSight = !!cap && compareDecimals(cap, "0") > 0 && scaleToPixels(peak, cap, 10) >= 1
  const ticks = niceTicks(capInSight && cap && compareDecimals(cap, peak) > 0 ? cap : peak)
  const top = ticks.at(-1) ?? "0"
  const plotW = W - LEFT - RIGHT
  const plotH = H - TOP - BOTTOM
  const x = (i: number) => LEFT + (n <= 1 ? plotW / 2 : (i * plotW) / (n - 1))
  const y = (v: string) => TOP + plotH - scaleToPixels(v, top, plotH)
  const path = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${y(p.cumulative_spend)}`).join(" ")
  const every = Math.max(1, Math.ceil(n / 6))
  const shown = active === null ? null : points[active]
  const unit = granularity === "day" ? "day" : "hour"
  const onKey = (e: KeyboardEvent) => {
    if (n === 0) return
    const i = active ?? n - 1
    if (e.key === "ArrowLeft") setActive(Math.max(0, i - 1))
    else if (e.key === "ArrowRight") setActive(Math.min(n - 1, i + 1))
    else if (e.key === "Home") setActive(0)
    else if (e.key === "End") setActive(n - 1)
    else return
    e.preventDefault()
  }
  return (
    <figure className="chart series-chart">
      <figcaption>
        <span>Cumulative spend per {unit} ({currency}, times in {zone ?? "UTC"})</span>
      </figcaption>
      <p className="chart-readout" aria-live="polite" data-testid="series-readout">
        {shown
          ? `${formatDateTime(shown.start, zone)}: ${formatMoney(shown.spend, currency)} in the ${unit}, ${formatMoney(shown.cumulative_spend, currency)} so far, ${shown.billable} billable`
          : n === 0 ? "No spend recorded in this period yet." : `Point at the chart, or focus it and use the arrow keys, to read a ${unit}.`}
      </p>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" tabIndex={0} onKeyDown={onKey}
        aria-label={`Cumulative spend per ${unit}: ${n} ${unit}${n === 1 ? "" : "s"}, up to ${formatMoney(points.at(-1)?.cumulative_spend ?? "0", currency)}`}
        onMouseLeave={() => setActive(null)}>
        {ticks.map((t) => (
          <g key={t} className="tick">
            <line x1={LEFT} x2={W - RIGHT} y1={y(t)} y2={y(t)} className="grid" />
            <text x={LEFT - 6} y={y(t) + 4} textAnchor="end">{formatMoney(t, currency)}</text>
          </g>
        ))}
        <line x1={LEFT} y1={TOP} x2={LEFT} y2={TOP + plotH} className="axis" />
        <line x1={LEFT} y1={TOP + plotH} x2={W - RIGHT} y2={TOP + plotH} className="axis" />
        {points.map((p, i) => i % every === 0 && (
          <text key={p.start} x={x(i)} y={H - 12} textAnchor="middle" className="tick">{tickLabel(p.start, zone, granularity)}</text>
        ))}
        {capInSight && cap && <line x1={LEFT} x2={W - RIGHT} y1={y(cap)} y2={y(cap)} className="cap" data-testid="series-cap" />}
        {n > 0 && <path d={path} className="line" fill="none" />}
        {/* a marker per bucket while they are few enough to tell apart (a single bucket has no line) */}
        {n <= MARKERS_MAX && points.map((p, i) => <circle key={p.start} cx={x(i)} cy={y(p.cumulative_spend)} r={2.5} className="marker" />)}
        {points.map((p, i) => (
          <rect key={p.start} x={x(i) - plotW / Math.max(n, 1) / 2} y={TOP} width={plotW / Math.max(n, 1)} height={plotH}
            className="hover-zone" data-testid={`series-point-${i}`} onMouseEnter={() => setActive(i)} />
        ))}
        {shown && active !== null && <circle cx={x(active)} cy={y(shown.cumulative_spend)} r={4} className="dot" />}
      </svg>
      {cap && !capInSight && <p className="hint">The per-period cap, {formatMoney(cap, currency)}, is far above the spend so far (not drawn).</p>}
    </figure>
  )
}
