import type { ContractTerms, Price } from "./types"

const DEFAULT_ZONE = "America/New_York"

/** The calendar date (YYYY-MM-DD) of an instant in a time zone: a flight is dated in the contract's zone. */
export function dayIn(zone: string, at: Date): string {
  const parts = new Intl.DateTimeFormat("en-US", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).formatToParts(at)
  const part = (type: string) => parts.find((p) => p.type === type)?.value ?? ""
  return `${part("year")}-${part("month")}-${part("day")}`
}

export function cpmTemplate(advertiserId = "", today: Date = new Date()): ContractTerms {
  const start = dayIn(DEFAULT_ZONE, today)
  return {
    contract_type: "cpm",
    common: {
      currency: "USD",
      time_zone: DEFAULT_ZONE,
      billing_period: "month",
      payment_terms_days: 30,
      flight_start: start,
      flight_end: `${start.slice(0, 4)}-12-31`,
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
