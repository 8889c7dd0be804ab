import { formatMoney } from "../../lib/money"
import { PartnerTermsView } from "./PartnerTermsView"
import { isPartnerTerms, type ContractTerms, type PartnerTerms, type Price } from "./types"

function price(p: Price, currency: string): string {
  return p.kind === "flat" ? formatMoney(p.amount, currency) : `${p.percent} % of order value`
}

/** The terms in words a finance team reads, not raw JSON. */
export function TermsView({ terms }: { terms: ContractTerms | PartnerTerms }) {
  if (isPartnerTerms(terms)) return <PartnerTermsView terms={terms} />
  const c = terms.common
  const cur = c.currency
  return (
    <div className="terms-view">
      <dl className="facts">
        <dt>Pricing</dt>
        <dd>{terms.contract_type === "cpm" ? "CPM — per thousand billable impressions" : "CPA — per attributed conversion"}</dd>
        <dt>Advertiser</dt>
        <dd>{c.advertiser_id}</dd>
        <dt>Currency / time zone</dt>
        <dd>
          {cur} · {c.time_zone}
        </dd>
        <dt>Flight</dt>
        <dd>
          {c.flight_start} → {c.flight_end ?? "open-ended"}
        </dd>
        <dt>Billing</dt>
        <dd>
          every {c.billing_period}, net {c.payment_terms_days} days{c.po_reference ? ` · PO ${c.po_reference}` : ""}
        </dd>
        <dt>Campaigns</dt>
        <dd>{c.campaign_ids.length ? c.campaign_ids.join(", ") : "none"}</dd>
        <dt>Renewal</dt>
        <dd>
          {c.auto_renew
            ? `auto-renews every ${c.renewal_term_months ?? "?"} months${c.escalator_pct ? `, +${c.escalator_pct} % per renewal` : ""}`
            : "does not auto-renew"}
          {c.notice_period_days ? ` · ${c.notice_period_days} days' notice` : ""}
        </dd>
      </dl>
      {terms.cpm && (
        <>
          <h3>
            Rate card: {terms.cpm.rate_card.kind} ({terms.cpm.rate_card.tier_basis} basis)
          </h3>
          <table className="table compact">
            <thead>
              <tr>
                <th scope="col">From impressions</th>
                <th scope="col" className="num">
                  Rate per thousand
                </th>
              </tr>
            </thead>
            <tbody>
              {terms.cpm.rate_card.bands.map((b) => (
                <tr key={b.from_impressions}>
                  <td>{b.from_impressions.toLocaleString("en-US")}</td>
                  <td className="num">{formatMoney(b.rate_cpm, cur)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <dl className="facts">
            <dt>Budget cap</dt>
            <dd>
              {terms.cpm.budget_caps?.total ? `${formatMoney(terms.cpm.budget_caps.total, cur)} in total` : "no total cap"}
              {terms.cpm.budget_caps?.per_period ? ` · ${formatMoney(terms.cpm.budget_caps.per_period, cur)} per period` : ""}
            </dd>
            <dt>Minimum commitment</dt>
            <dd>
              {terms.cpm.minimum_commitment_per_period
                ? `${formatMoney(terms.cpm.minimum_commitment_per_period, cur)} per period`
                : "none"}
            </dd>
          </dl>
        </>
      )}
      {terms.cpa && (
        <>
          <h3>Payouts</h3>
          <table className="table compact">
            <thead>
              <tr>
                <th scope="col">Event</th>
                <th scope="col">Advertiser pays</th>
                <th scope="col">Partner earns</th>
                <th scope="col">Volume tiers</th>
              </tr>
            </thead>
            <tbody>
              {terms.cpa.payouts.map((p) => (
                <tr key={p.event_type}>
                  <td>{p.event_type}</td>
                  <td>{price(p.advertiser_price, cur)}</td>
                  <td>{price(p.partner_payout, cur)}</td>
                  <td>{p.tiers?.length ? p.tiers.map((t) => `from ${t.from_conversions}: ${price(t.advertiser_price, cur)}`).join("; ") : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {terms.cpa.attribution && (
            <p>
              Attribution: {terms.cpa.attribution.model}, lookback {terms.cpa.attribution.lookback_days} days
            </p>
          )}
        </>
      )}
    </div>
  )
}
