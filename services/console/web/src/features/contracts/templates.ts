import type { ContractTerms, Price } from "./types"

const isoDay = (d: Date) => d.toISOString().slice(0, 10)

export function cpmTemplate(advertiserId = "", today: Date = new Date()): ContractTerms {
  const end = new Date(Date.UTC(today.getUTCFullYear(), 11, 31))
  return {
    contract_type: "cpm",
    common: {
      currency: "USD",
      time_zone: "America/New_York",
      billing_period: "month",
      payment_terms_days: 30,
      flight_start: isoDay(today),
      flight_end: isoDay(end),
      campaign_ids: [],
      po_reference: null,
      measurement: "first_party",
      advertiser_id: advertiserId,
      auto_renew: false,
      renewal_term_months: null,
      notice_period_days: 0,
      escalator_pct: null,
      attribution_tail: true,
      committed_value: null,
    },
    cpm: {
      rate_card: { kind: "flat", tier_basis: "period", bands: [{ from_impressions: 0, rate_cpm: "10.00" }] },
      budget_caps: { total: null, per_period: null },
      minimum_commitment_per_period: null,
    },
    cpa: null,
  }
}

export const flat = (amount: string): Price => ({ kind: "flat", amount })

export function cpaTemplate(advertiserId = "", today: Date = new Date()): ContractTerms {
  const base = cpmTemplate(advertiserId, today)
  return {
    ...base,
    contract_type: "cpa",
    cpm: null,
    cpa: {
      payouts: [{ event_type: "purchase", advertiser_price: flat("10.00"), partner_payout: flat("6.00"), tiers: [] }],
      partner_overrides: [],
      attribution: { lookback_days: 7, model: "last_touch", min_delay_seconds: 0 },
    },
  }
}

/** Immutable set of a value at a dotted path (`cpm.rate_card.bands.0.rate_cpm`). */
export function setAt<T>(obj: T, path: string, value: unknown): T {
  const keys = path.split(".")
  const root = structuredClone(obj) as Record<string, unknown>
  let cur: Record<string, unknown> = root
  keys.slice(0, -1).forEach((k) => {
    const next = cur[k]
    cur = (typeof next === "object" && next !== null ? next : {}) as Record<string, unknown>
  })
  const last = keys.at(-1)
  if (last !== undefined) cur[last] = value
  return root as T
}
