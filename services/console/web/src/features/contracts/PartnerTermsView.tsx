import { formatMoney } from "../../lib/money"
import type { PartnerTerms, Price } from "./types"

function price(p: Price, currency: string): string {
  return p.kind === "flat" ? formatMoney(p.amount, currency) : `${p.percent} % of order value`
}

/** A partner's reading of a contract's terms: what it earns, when, on which campaigns. */
export function PartnerTermsView({ terms }: { terms: PartnerTerms }) {
  const c = terms.common
  const cur = c.currency
  return (
    <div className="terms-view">
      <dl className="facts">
        <dt>Currency / time zone</dt>
        <dd>
          {cur} · {c.time_zone}
        </dd>
        <dt>Flight</dt>
        <dd>
          {c.flight_start} → {c.flight_end ?? "open-ended"}
        </dd>
        <dt>Periods</dt>
        <dd>every {c.billing_period}</dd>
        <dt>Campaigns</dt>
        <dd>{c.campaign_ids.length ? c.campaign_ids.join(", ") : "none"}</dd>
      </dl>
      {terms.cpa && (
        <>
          <h3>Your payouts</h3>
          <table className="table compact">
            <thead>
              <tr>
                <th scope="col">Event</th>
                <th scope="col">You earn</th>
                <th scope="col">Volume tiers</th>
              </tr>
            </thead>
            <tbody>
              {terms.cpa.payouts.map((p) => (
                <tr key={p.event_type}>
                  <td>{p.event_type}</td>
                  <td>{price(p.partner_payout, cur)}</td>
                  <td>{p.tiers.length ? p.tiers.map((t) => `from ${t.from_conversions}: ${price(t.partner_payout, cur)}`).join("; ") : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {terms.cpa.attribution && (
            <p>
              Attribution: {terms.cpa.attribution.model}, lookback {terms.cpa.attribution.lookback_days} days
            </p>
          )}
          {terms.cpa.partner_overrides.length > 0 && <p>{terms.cpa.partner_overrides.length} override(s) for you</p>}
        </>
      )}
    </div>
  )
}
