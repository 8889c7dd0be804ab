import { Empty, Loading, ProblemAlert, TableScroll, When } from "../../components/ui"
import { addDecimals, compareDecimals } from "../../lib/decimal"
import { formatMoney } from "../../lib/money"
import { CLOSE_GRACE_MS, periodEndMs } from "../../lib/periods"
import { useListContractsQuery } from "../contracts/api"
import { useGetSpendQuery } from "../overview/api"
import type { SpendRow } from "../overview/types"

export interface PreviewLine {
  description: string
  amount: string
}

/**
 * The lines a period's invoice will carry if nothing else arrives, from its running total: the
 * usage so far, and the minimum-commitment shortfall the close would add. Provisional by nature.
 */
export function previewLines(row: SpendRow): PreviewLine[] {
  const usage = row.contract_type === "cpa" ? "Attributed conversions so far" : "Billable impressions so far"
  const count = row.counts?.billable
  const lines: PreviewLine[] = [{ description: count === undefined ? usage : `${usage} (${count.toLocaleString("en-US")})`, amount: row.amount_exact }]
  const minimum = row.minimum_commitment
  if (minimum && compareDecimals(minimum, row.amount_exact) > 0)
    lines.push({ description: "Minimum commitment shortfall (if nothing else arrives)", amount: addDecimals(minimum, `-${row.amount_exact}`) })
  return lines
}

/** The open period's invoices-to-be, for finance and the advertiser, from metering's running totals. */
export function InvoicePreview() {
  const spend = useGetSpendQuery()
  const contracts = useListContractsQuery({ limit: 100 })
  const byId = new Map((contracts.data?.items ?? []).map((c) => [c.id, c]))
  const open = (spend.data?.items ?? []).filter((r) => r.status !== "closed")
  return (
    <section aria-labelledby="preview-heading" className="card preview">
      <h2 id="preview-heading">
        Open period: invoice preview <span className="badge badge-warn">provisional</span>
      </h2>
      <p className="hint">
        What each open period's invoice would carry if no further events arrived, from the running totals. It changes
        as events arrive; the invoice itself is drafted when the period closes.
      </p>
      {spend.isLoading && <Loading what="the running totals" />}
      <ProblemAlert error={spend.error} what="load the running totals" onRetry={() => void spend.refetch()} />
      {spend.data && open.length === 0 && <Empty>No open period has any spend yet.</Empty>}
      {open.map((r) => {
        const contract = byId.get(r.contract_id)
        const zone = contract?.time_zone ?? null
        const end = zone ? periodEndMs(r.period_key, zone) : null
        const lines = previewLines(r)
        const total = lines.reduce((sum, l) => addDecimals(sum, l.amount), "0")
        const label = `${contract?.name ?? r.contract_id} · ${r.period_key}`
        return (
          <div key={`${r.contract_id}/${r.period_key}`} data-testid={`preview-${r.contract_id}-${r.period_key}`} className="preview-doc">
            <h3>
              {label} <span className="muted">({r.advertiser_id})</span>
            </h3>
            <TableScroll label={`Preview of ${label}`}>
              <table className="table compact">
                <thead>
                  <tr>
                    <th scope="col">Line</th>
                    <th scope="col" className="num">Amount</th>
                  </tr>
                </thead>
                <tbody>
                  {lines.map((l) => (
                    <tr key={l.description}>
                      <td>{l.description}</td>
                      <td className="num">{formatMoney(l.amount, r.currency)}</td>
                    </tr>
                  ))}
                  <tr>
                    <th scope="row">Provisional total</th>
                    <td className="num" data-testid={`preview-total-${r.contract_id}-${r.period_key}`}>
                      <strong>{formatMoney(total, r.currency)}</strong>
                    </td>
                  </tr>
                </tbody>
              </table>
            </TableScroll>
            <p className="hint">
              Computed from the running total of <When at={r.updated_at} zone={zone} />.{" "}
              {end !== null && zone ? (
                <>
                  The period ends <When at={new Date(end).toISOString()} zone={zone} />; it closes and the invoice is drafted
                  about <When at={new Date(end + CLOSE_GRACE_MS).toISOString()} zone={zone} />.
                </>
              ) : (
                "It is drafted when the period closes."
              )}
            </p>
          </div>
        )
      })}
    </section>
  )
}
