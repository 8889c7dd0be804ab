import { Empty, Loading, ProblemAlert, TableScroll, When } from "../../components/ui"
import { formatMoney } from "../../lib/money"
import { useListContractsQuery } from "../contracts/api"
import { EARNINGS_REFRESH_MS, useListEarningsQuery } from "./api"
import type { Earning } from "./types"

/** "purchase 3 · signup 1": the partner's net conversions per event type. */
export function byEventType(e: Earning): string {
  const counts = new Map<string, number>()
  for (const line of e.lines) counts.set(line.event_type, (counts.get(line.event_type) ?? 0) + line.quantity)
  return [...counts].map(([event, n]) => `${event} ${n.toLocaleString("en-US")}`).join(" · ")
}

/**
 * A partner's open-period earnings per contract, from metering's running totals: its own attributed
 * conversions and payouts so far (never the advertiser's side), marked provisional, with when they were
 * computed and when the period closes (its payout statement is drafted then).
 */
export function PartnerEarnings() {
  const earnings = useListEarningsQuery({ status: "open" }, { pollingInterval: EARNINGS_REFRESH_MS })
  const contracts = useListContractsQuery({ limit: 100 })
  const nameOf = new Map((contracts.data?.items ?? []).map((c) => [c.id, c.name]))
  const rows = earnings.data ?? []
  return (
    <section aria-labelledby="earnings-heading" className="card preview">
      <h1 id="earnings-heading">
        Earnings this period <span className="badge badge-warn">provisional</span>
      </h1>
      <p className="hint">
        Your attributed conversions and payouts in each contract&apos;s open billing period so far. They change as
        conversions and reversals arrive; your payout statement is drafted when the period closes.
      </p>
      {earnings.isLoading && <Loading what="your earnings" />}
      <ProblemAlert error={earnings.error} what="load your earnings" onRetry={() => void earnings.refetch()} />
      {earnings.data && rows.length === 0 && <Empty>No open period has earnings yet.</Empty>}
      {rows.length > 0 && (
        <TableScroll label="Earnings this period">
          <table className="table compact">
            <thead>
              <tr>
                <th scope="col">Contract</th>
                <th scope="col" className="num">Period</th>
                <th scope="col" className="num">Conversions</th>
                <th scope="col">By event</th>
                <th scope="col" className="num">Earnings so far</th>
                <th scope="col">Computed</th>
                <th scope="col">Closes</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((e) => {
                const key = `${e.contract_id}-${e.period_key}`
                const name = nameOf.get(e.contract_id)
                return (
                  <tr key={key} data-testid={`earning-${key}`}>
                    <td>
                      {name ?? e.contract_id}
                      {name && <span className="muted"> ({e.contract_id})</span>}
                    </td>
                    <td className="num">{e.period_key}</td>
                    <td className="num">{e.conversions.toLocaleString("en-US")}</td>
                    <td>{byEventType(e) || "—"}</td>
                    <td className="num" data-testid={`earning-amount-${key}`}>
                      {/* shown to the currency's minor unit; the exact amount (statements round each line once) on hover */}
                      <data value={e.amount_exact} title={`exact: ${e.amount_exact} ${e.currency}`}>
                        <strong>{formatMoney(e.amount_exact, e.currency)}</strong>
                      </data>
                    </td>
                    <td>
                      <When at={e.updated_at} zone={e.time_zone} />
                    </td>
                    <td>
                      <When at={e.closes_at} zone={e.time_zone} />
                    </td>
                  </tr>
                )
              })}
            </tbody>
          </table>
        </TableScroll>
      )}
    </section>
  )
}
