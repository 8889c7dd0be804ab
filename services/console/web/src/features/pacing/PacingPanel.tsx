import { useSearchParams } from "react-router"
import { Loading, ProblemAlert, StatusBadge, When } from "../../components/ui"
import { formatMoney } from "../../lib/money"
import { useGetContractPacingQuery, useGetPacingSeriesQuery } from "./api"
import { SeriesChart } from "./SeriesChart"
import type { Granularity, Pacing } from "./types"

const STATUS_WORDS: Record<Pacing["status"], string> = {
  no_budget: "no budget to pace against (no per-period cap or minimum commitment)",
  not_started: "the flight has not started in this period",
  on_pace: "on pace",
  under: "under-pacing",
  over: "over-pacing",
  outside_flight: "the flight does not reach this period",
}

/** The range and the period live in the URL (?range=day&period=2026-12), so a reload keeps them. */
export function usePacingChoice(): { granularity: Granularity; period: string | null; choose: (k: "range" | "period", v: string) => void } {
  const [params, setParams] = useSearchParams()
  const granularity: Granularity = params.get("range") === "day" ? "day" : "hour"
  const choose = (k: "range" | "period", v: string) =>
    setParams((p) => { const next = new URLSearchParams(p); next.set(k, v); return next }, { replace: true })
  return { granularity, period: params.get("period"), choose }
}

function PacingFacts({ p }: { p: Pacing }) {
  const zone = p.time_zone
  return (
    <dl className="facts" data-testid={`pacing-${p.contract_id}-${p.period_key}`}>
      <dt>Pacing</dt>
      <dd>
        <StatusBadge status={p.status} /> {STATUS_WORDS[p.status]}
        {p.pace_pct ? ` · ${p.pace_pct} % of the expected spend` : ""}
      </dd>
      <dt>Spend so far</dt>
      <dd>{formatMoney(p.spend, p.currency)}{p.expected_spend ? ` (expected by now: ${formatMoney(p.expected_spend, p.currency)})` : ""}</dd>
      <dt>Projected at period end</dt>
      <dd data-testid="projected-spend">{p.projected_spend ? formatMoney(p.projected_spend, p.currency) : "—"}</dd>
      <dt>Projected cap date</dt>
      <dd data-testid="projected-cap-at">
        {p.cap_reached ? "the cap is reached" : p.projected_cap_at ? <When at={p.projected_cap_at} zone={zone} /> : "not within the period at this pace"}
      </dd>
      <dt>Per-period cap</dt>
      <dd data-testid="cap-per-period">{p.budget_cap_per_period ? formatMoney(p.budget_cap_per_period, p.currency) : "none"}</dd>
      <dt>Total cap</dt>
      <dd data-testid="cap-total">
        {p.lifetime ? (
          <>
            {formatMoney(p.lifetime.cap_total, p.currency)} over the flight: <StatusBadge status={p.lifetime.status} />{" "}
            {formatMoney(p.lifetime.spend, p.currency)} spent
            {p.lifetime.projected_spend ? `, projected ${formatMoney(p.lifetime.projected_spend, p.currency)} at the flight's end` : ""}
            {p.lifetime.cap_reached ? ", the cap is reached" : p.lifetime.projected_cap_at ? <>, cap reached <When at={p.lifetime.projected_cap_at} zone={zone} /></> : ""}
          </>
        ) : p.budget_cap_total ? `${formatMoney(p.budget_cap_total, p.currency)} over the flight` : "none"}
      </dd>
      {p.minimum_commitment && (<><dt>Minimum commitment</dt><dd>{formatMoney(p.minimum_commitment, p.currency)}</dd></>)}
      <dt>Evaluated</dt>
      <dd><When at={p.as_of ?? p.updated_at} zone={zone} /> (forecasts, never billed)</dd>
    </dl>
  )
}

/** A contract's spend history and pacing for one period, from the pacing service. */
export function PacingPanel({ contractId }: { contractId: string }) {
  const { granularity, period, choose } = usePacingChoice()
  const pacing = useGetContractPacingQuery(contractId, { pollingInterval: 30_000 })
  const periods = pacing.data ?? []
  const chosen = periods.find((p) => p.period_key === period) ?? periods.at(-1)
  const series = useGetPacingSeriesQuery(
    { contractId, periodKey: chosen?.period_key, granularity },
    { skip: !chosen, pollingInterval: 30_000 },
  )
  return (
    <section className="card" aria-labelledby="pacing-heading">
      <h2 id="pacing-heading">Spend history and pacing</h2>
      {pacing.isLoading && <Loading what="pacing" />}
      <ProblemAlert error={pacing.error} what="load the pacing" onRetry={() => void pacing.refetch()} />
      {!pacing.isLoading && !pacing.error && !chosen && <p className="empty">No spend recorded for this contract yet.</p>}
      {chosen && (
        <>
          <div className="filters">
            <label>
              Period{" "}
              <select value={chosen.period_key} onChange={(e) => choose("period", e.target.value)}>
                {periods.map((p) => <option key={p.period_key} value={p.period_key}>{p.period_key}{p.period_status === "open" ? " (open)" : ""}</option>)}
              </select>
            </label>
            <fieldset className="segmented">
              <legend>Range</legend>
              {(["hour", "day"] as const).map((g) => (
                <label key={g}>
                  <input type="radio" name="pacing-range" value={g} checked={granularity === g} onChange={() => choose("range", g)} />
                  {g === "hour" ? "Hours" : "Days"}
                </label>
              ))}
            </fieldset>
          </div>
          <PacingFacts p={chosen} />
          {series.isLoading && <Loading what="spend history" />}
          <ProblemAlert error={series.error} what="load the spend history" onRetry={() => void series.refetch()} />
          {series.data && (
            <SeriesChart points={series.data.points} currency={chosen.currency} zone={chosen.time_zone}
              granularity={series.data.granularity} cap={chosen.budget_cap_per_period} />
          )}
        </>
      )}
    </section>
  )
}
