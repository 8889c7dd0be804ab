import { formatDateTime, formatMoney } from "../../lib/money"
import { normalizeField } from "../../lib/problems"

/**
 * Field paths as the API names them (`terms.cpm.rate_card.bands[0].rate_cpm`) in words a
 * finance team reads ("Band 1 rate per thousand"), and their values with units.
 */
const LABELS: Record<string, string> = {
  name: "Contract name",
  contract_type: "Pricing model",
  partner_ids: "Partners",
  effective_from: "Effective from",
  ends_at: "Ends at",
  effective_date: "Termination date",
  reason: "Reason",
  comment: "Comment",
  "common.advertiser_id": "Advertiser",
  "common.currency": "Currency",
  "common.time_zone": "Time zone",
  "common.billing_period": "Billing period",
  "common.payment_terms_days": "Payment terms",
  "common.flight_start": "Flight start",
  "common.flight_end": "Flight end",
  "common.campaign_ids": "Campaigns",
  "common.po_reference": "Purchase order reference",
  "common.measurement": "Measurement",
  "common.auto_renew": "Auto-renew",
  "common.renewal_term_months": "Renewal term",
  "common.notice_period_days": "Notice period",
  "common.escalator_pct": "Escalator on renewal",
  "common.attribution_tail": "Attribution tail",
  "common.committed_value": "Committed value",
  "cpm.rate_card.kind": "Rate card",
  "cpm.rate_card.tier_basis": "Tier basis",
  "cpm.rate_card.bands": "Rate bands",
  "cpm.budget_caps": "Budget caps",
  "cpm.budget_caps.total": "Total budget cap",
  "cpm.budget_caps.per_period": "Budget cap per period",
  "cpm.minimum_commitment_per_period": "Minimum commitment per period",
  "cpa.payouts": "Payouts",
  "cpa.attribution.lookback_days": "Lookback window",
  "cpa.attribution.model": "Attribution model",
  "cpa.attribution.min_delay_seconds": "Minimum delay",
}

const PATTERNS: [RegExp, (m: RegExpExecArray) => string][] = [
  [/^cpm\.rate_card\.bands\.(\d+)\.rate_cpm$/, (m) => `Band ${Number(m[1]) + 1} rate per thousand`],
  [/^cpm\.rate_card\.bands\.(\d+)\.from_impressions$/, (m) => `Band ${Number(m[1]) + 1} from impressions`],
  [/^cpm\.rate_card\.bands\.(\d+)$/, (m) => `Rate band ${Number(m[1]) + 1}`],
  [/^cpa\.payouts\.(\d+)\.event_type$/, (m) => `Payout ${Number(m[1]) + 1} event type`],
  [/^cpa\.payouts\.(\d+)\.advertiser_price(?:\.(amount|percent|kind))?$/, (m) => `Payout ${Number(m[1]) + 1} advertiser price${m[2] === "kind" ? " kind" : ""}`],
  [/^cpa\.payouts\.(\d+)\.partner_payout(?:\.(amount|percent|kind))?$/, (m) => `Payout ${Number(m[1]) + 1} partner payout${m[2] === "kind" ? " kind" : ""}`],
  [/^cpa\.payouts\.(\d+)\.tiers.*$/, (m) => `Payout ${Number(m[1]) + 1} volume tiers`],
  [/^cpa\.payouts\.(\d+)$/, (m) => `Payout ${Number(m[1]) + 1}`],
  [/^common\.campaign_ids\.(\d+)$/, (m) => `Campaign ${Number(m[1]) + 1}`],
]

const humanize = (key: string) => {
  const last = key.split(".").filter((k) => !/^\d+$/.test(k)).at(-1) ?? key
  const words = last.replace(/_/g, " ")
  return words.charAt(0).toUpperCase() + words.slice(1)
}

/** A field's label from its API path (with or without the `terms.`/`body.` prefix). */
export function labelFor(apiPath: string): string {
  const key = normalizeField(apiPath)
  const known = LABELS[key]
  if (known) return known
  for (const [re, label] of PATTERNS) {
    const m = re.exec(key)
    if (m) return label(m)
  }
  return humanize(key)
}

const MONEY = /^(cpm\.rate_card\.bands\.\d+\.rate_cpm|cpm\.budget_caps\.(total|per_period)|cpm\.minimum_commitment_per_period|common\.committed_value|cpa\.payouts\.\d+\.(advertiser_price|partner_payout)\.amount)$/
const DAYS = /^(common\.payment_terms_days|common\.notice_period_days|cpa\.attribution\.lookback_days)$/
const INSTANTS = /^(effective_from|ends_at)$/

/** A value from a diff, with its unit: money in the currency, days, months, percent, instants in the zone. */
export function formatFieldValue(apiPath: string, value: unknown, currency: string, zone: string): string {
  if (value === null || value === undefined || value === "") return "—"
  const key = normalizeField(apiPath)
  if (typeof value === "string" && MONEY.test(key)) return formatMoney(value, currency)
  if (typeof value === "number" && DAYS.test(key)) return `${value} day${value === 1 ? "" : "s"}`
  if (typeof value === "number" && key === "common.renewal_term_months") return `${value} month${value === 1 ? "" : "s"}`
  if (typeof value === "number" && key === "cpa.attribution.min_delay_seconds") return `${value} s`
  if (typeof value === "number" && /from_impressions$/.test(key)) return value.toLocaleString("en-US")
  if ((typeof value === "string" || typeof value === "number") && /(escalator_pct|\.percent)$/.test(key)) return `${value} %`
  if (typeof value === "string" && INSTANTS.test(key)) return formatDateTime(value, zone)
  if (typeof value === "boolean") return value ? "yes" : "no"
  if (Array.isArray(value) && value.every((x) => typeof x === "string")) return value.length ? value.join(", ") : "none"
  if (typeof value === "object" && key === "cpm.budget_caps") {
    const caps = value as { total?: string | null; per_period?: string | null }
    return [caps.total ? `${formatMoney(caps.total, currency)} in total` : "no total cap",
      caps.per_period ? `${formatMoney(caps.per_period, currency)} per period` : "no cap per period"].join(" · ")
  }
  if (typeof value === "object" && /^cpm\.rate_card\.bands\.\d+$/.test(key)) {
    const band = value as { from_impressions?: number; rate_cpm?: string }
    return `from ${(band.from_impressions ?? 0).toLocaleString("en-US")} impressions: ${formatMoney(band.rate_cpm ?? null, currency)} per thousand`
  }
  if (typeof value === "object" && "kind" in value) {
    const price = value as { kind: string; amount?: string | null; percent?: string | null }
    if (price.kind === "flat") return formatMoney(price.amount ?? null, currency)
    if (price.kind === "percent") return `${price.percent ?? "?"} % of order value`
  }
  if (typeof value === "string") return value.replace(/_/g, " ")
  if (typeof value === "number") return value.toLocaleString("en-US")
  return JSON.stringify(value)
}
