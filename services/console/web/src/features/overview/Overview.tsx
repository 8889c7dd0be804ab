import { Link } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { Empty, Loading, ProblemAlert, TableScroll, usePageTitle } from "../../components/ui"
import { ratioBasisPoints } from "../../lib/decimal"
import { formatDate, formatDateTime, formatMoney, formatPercent } from "../../lib/money"
import { useListContractsQuery } from "../contracts/api"
import { selectUser } from "../session/sessionSlice"
import { useGetSpendQuery } from "./api"
import { selectEventsReceived, selectLiveAlerts, selectSpendPoints, selectStreamStatus } from "./liveSpendSlice"
import { SpendChart } from "./SpendChart"
import type { BudgetAlert, SpendRow } from "./types"

/** The cap a period's spend burns against: the per-period cap, else the total one. */
export const capOf = (row: SpendRow): string | null => row.budget_cap_per_period ?? row.budget_cap_total ?? null

export const ALERT_THRESHOLDS_PCT = [50, 80, 100] as const

/** Budget alerts as metering raises them (50, 80, 100 % of the cap), from the totals in view. */
export function alertsFor(rows: SpendRow[]): BudgetAlert[] {
  const out: BudgetAlert[] = []
  for (const r of rows) {
    const cap = capOf(r)
    const bp = cap ? ratioBasisPoints(r.amount_exact, cap) : null
    if (bp === null) continue
    const reached = ALERT_THRESHOLDS_PCT.filter((t) => bp >= t * 100).at(-1)
    if (reached !== undefined)
      out.push({ contract_id: r.contract_id, advertiser_id: r.advertiser_id, currency: r.currency, period_key: r.period_key,
        threshold_pct: reached, spent: r.amount_exact, cap, at: r.updated_at ?? "" })
  }
  return out.sort((a, b) => b.threshold_pct - a.threshold_pct)
}

function BurnBar({ row }: { row: SpendRow }) {
  const cap = capOf(row)
  const bp = cap ? ratioBasisPoints(row.amount_exact, cap) : null
  if (bp === null) return <span className="muted">no cap</span>
  const pct = Math.min(bp, 10_000) / 100
  // the same thresholds as the alerts, so the bar's colour and the alert list always agree
  const tone = bp >= 10_000 ? "bad" : bp >= 8_000 ? "warn" : "ok"
  return (
    <span className="burn">
      <span className="burn-track" aria-hidden="true">
        <span className={`burn-fill burn-${tone}`} style={{ width: `${pct}%` }} />
      </span>
      <span>{formatPercent(bp)}</span>
    </span>
  )
}

export function Overview() {
  const user = useAppSelector(selectUser)
  const { data, error, isLoading, refetch } = useGetSpendQuery()
  const status = useAppSelector(selectStreamStatus)
  const points = useAppSelector(selectSpendPoints)
  const pushedAlerts = useAppSelector(selectLiveAlerts)
  const events = useAppSelector(selectEventsReceived)
  usePageTitle("Running spend")
  // names beside ids: the spend API carries contract ids only, the contracts list has the names
  const contracts = useListContractsQuery({ limit: 100 })
  const names = new Map((contracts.data?.items ?? []).map((c) => [c.id, c.name]))
  const contractLink = (id: string) => (
    <Link to={`/contracts/${encodeURIComponent(id)}`}>
      {names.get(id) ?? id}
      {names.has(id) && <span className="muted"> ({id})</span>}
    </Link>
  )

  const byAdvertiser = new Map<string, SpendRow[]>()
  for (const row of data?.items ?? []) {
    const list = byAdvertiser.get(row.advertiser_id) ?? []
    list.push(row)
    byAdvertiser.set(row.advertiser_id, list)
  }
  const derived = alertsFor(data?.items ?? [])
  const alerts = [...derived, ...pushedAlerts.filter((a) => !derived.some((d) => d.contract_id === a.contract_id && d.period_key === a.period_key))]
  const currencies = [...new Set((data?.items ?? []).map((r) => r.currency))].sort()

  return (
    <section aria-labelledby="overview-heading">
      <div className="page-head">
        <h1 id="overview-heading">Running spend</h1>
        <span className={`live live-${status}`} role="status" aria-live="polite">
          {status === "open" ? "● Live" : status === "reconnecting" ? "Reconnecting…" : status === "connecting" ? "Connecting…" : "Not live"}
          {events > 0 ? ` · ${events} update${events === 1 ? "" : "s"}` : ""}
        </span>
      </div>
      {user?.tenantType && <p className="hint">You see the spend of {user.tenantId} only.</p>}
      {isLoading && <Loading what="running spend" />}
      <ProblemAlert error={error} what="load running spend" onRetry={() => void refetch()} />
      {data && (
        <>
          <div className="charts">
            {currencies.length === 0 && <Empty>No spend yet: totals appear here as events arrive.</Empty>}
            {currencies.map((c) => (
              <SpendChart key={c} currency={c} points={points.map((p) => ({ at: p.at, value: p.totals[c] ?? "0" }))} />
            ))}
          </div>
          <div className="columns columns-main-aside">
            <div>
              <h2>By advertiser and contract</h2>
              {[...byAdvertiser.entries()].map(([advertiser, rows]) => (
                <TableScroll key={advertiser} label={`Spend of ${advertiser}`}>
                <table className="table">
                  <caption>{advertiser}</caption>
                  <thead>
                    <tr>
                      <th scope="col">Contract</th>
                      <th scope="col">Period</th>
                      <th scope="col" className="num">
                        Spend
                      </th>
                      <th scope="col" className="num">
                        Budget cap
                      </th>
                      <th scope="col">Budget burn</th>
                    </tr>
                  </thead>
                  <tbody>
                    {rows.map((r) => (
                      <tr key={`${r.contract_id}/${r.period_key}`} data-testid={`spend-${r.contract_id}-${r.period_key}`}>
                        <td>
                          {contractLink(r.contract_id)}
                        </td>
                        <td>
                          {r.period_key}
                          {r.status && <small className="muted"> · {r.status === "closed" ? "closed" : "open"}</small>}
                        </td>
                        <td className="num" data-testid={`spend-amount-${r.contract_id}-${r.period_key}`}>
                          {formatMoney(r.amount_exact, r.currency)}
                        </td>
                        <td className="num">{formatMoney(capOf(r), r.currency)}</td>
                        <td>
                          <BurnBar row={r} />
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                </TableScroll>
              ))}
            </div>
            <aside aria-labelledby="alerts-heading" className="card">
              <h2 id="alerts-heading">Budget alerts</h2>
              {alerts.length === 0 ? (
                <Empty>No budget alerts.</Empty>
              ) : (
                <ul className="alerts">
                  {alerts.map((a) => (
                    <li key={`${a.contract_id}/${a.period_key ?? ""}/${a.threshold_pct}`} className={a.threshold_pct >= 100 ? "bad" : "warn"}>
                      <strong>{a.threshold_pct} %</strong> of the budget of {contractLink(a.contract_id)}
                      {a.period_key ? ` (${a.period_key})` : ""}
                      <div className="alert-facts">
                        {[a.spent && a.currency ? `${formatMoney(a.spent, a.currency)}${a.cap ? ` of ${formatMoney(a.cap, a.currency)}` : ""}` : null]
                          .filter(Boolean)
                          .join("")}
                        {a.spent && a.currency && a.at ? " · " : ""}
                        {a.at && (
                          <time dateTime={a.at} title={formatDateTime(a.at)}>
                            {formatDate(a.at)}
                          </time>
                        )}
                      </div>
                    </li>
                  ))}
                </ul>
              )}
            </aside>
          </div>
        </>
      )}
    </section>
  )
}
