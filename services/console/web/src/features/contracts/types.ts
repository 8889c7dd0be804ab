/** Shapes of the contracts service's JSON (services/contracts). Amounts are decimal strings. */
export type ContractStatus = "draft" | "pending_approval" | "scheduled" | "active" | "terminating" | "ended"
export type VersionState = "draft" | "submitted" | "approved" | "rejected" | "withdrawn"
export type VersionKind = "initial" | "amendment" | "renewal" | "termination"

export interface Price {
  kind: "flat" | "percent"
  amount?: string | null
  percent?: string | null
}

export interface PayoutTier {
  from_conversions: number
  advertiser_price: Price
  partner_payout: Price
}

export interface PayoutRow {
  event_type: string
  advertiser_price: Price
  partner_payout: Price
  tiers: PayoutTier[]
}

export interface RateBand {
  from_impressions: number
  rate_cpm: string
}

export interface CommonTerms {
  currency: string
  time_zone: string
  billing_period: "month" | "week"
  payment_terms_days: number
  flight_start: string
  flight_end: string | null
  campaign_ids: string[]
  po_reference: string | null
  measurement: "first_party" | "third_party"
  advertiser_id: string
  auto_renew: boolean
  renewal_term_months: number | null
  notice_period_days: number
  escalator_pct: string | null
  attribution_tail: boolean
  committed_value: string | null
}

export interface CpmTerms {
  rate_card: { kind: "flat" | "graduated" | "volume"; tier_basis: "period" | "lifetime"; bands: RateBand[] }
  budget_caps: { total: string | null; per_period: string | null } | null
  minimum_commitment_per_period: string | null
}

export interface CpaTerms {
  payouts: PayoutRow[]
  partner_overrides?: unknown[]
  attribution?: { lookback_days?: number; model?: string; min_delay_seconds?: number; [k: string]: unknown } | null
  [k: string]: unknown
}

export interface ContractTerms {
  contract_type: "cpm" | "cpa"
  common: CommonTerms
  cpm: CpmTerms | null
  cpa: CpaTerms | null
}

export interface VersionRef {
  version: number
  kind: VersionKind
  state: VersionState
}

export interface Contract {
  id: string
  name: string
  contract_type: "cpm" | "cpa"
  advertiser_id: string
  partner_ids: string[]
  currency: string
  time_zone: string
  status: ContractStatus
  current_version: number | null
  revision: number
  created_at: string
  created_by: string
  terminated_at: string | null
  versions: VersionRef[]
  renewal?: {
    auto_renew: boolean
    term_ends_at?: string | null
    notice_deadline?: string | null
    cancelled?: boolean
  }
}

export interface Approval {
  approver: string
  role: string
  comment: string | null
  at: string
}

export interface ContractVersion {
  contract_id: string
  version: number
  kind: VersionKind
  state: VersionState
  terms: ContractTerms
  effective_from: string
  ends_at: string | null
  backdated: boolean
  committed_value: string | null
  etag: string
  authors: string[]
  submitted_by: string | null
  submitted_at: string | null
  required_approvals: Record<string, number>
  approvals: Approval[]
  missing_approvals: Record<string, number>
  decided_at: string | null
  decided_by: string | null
  decision_comment: string | null
  comment: string | null
  created_at: string
  updated_at: string
}

export interface Page<T> {
  items: T[]
  next_cursor: string | null
}

export interface Change {
  path: string
  from: unknown
  to: unknown
  change: "added" | "removed" | "changed"
}

export interface VersionDiff {
  contract_id: string
  from_version: number
  to_version: number
  changes: Change[]
}

export interface AuditEntry {
  seq: number
  action: string
  actor: string
  at: string
  before: unknown
  after: unknown
  hash: string
}

export interface ContractFilters {
  status?: ContractStatus | ""
  contract_type?: "cpm" | "cpa" | ""
  advertiser_id?: string
  name?: string
  cursor?: string | null
  limit?: number
}

/** The terms as a partner named on the contract reads them (contracts OpenAPI `PartnerTerms`):
 * flight, currency, campaigns, its own payouts and overrides — never advertiser prices, the PO
 * reference, the committed value or other partners. */
export interface PartnerTerms {
  view: "partner"
  contract_type: "cpm" | "cpa"
  common: Pick<CommonTerms, "currency" | "time_zone" | "billing_period" | "flight_start" | "flight_end" | "campaign_ids">
  cpa: {
    payouts: { event_type: string; partner_payout: Price; tiers: { from_conversions: number; partner_payout: Price }[] }[]
    partner_overrides: unknown[]
    attribution: CpaTerms["attribution"]
    caps: { per_partner: unknown }
  } | null
}

/** A version as a partner reads it (contracts OpenAPI `PartnerVersion`): no staff names, approvals or comments. */
export interface PartnerVersion {
  view: "partner"
  contract_id: string
  version: number
  kind: VersionKind
  state: VersionState
  effective_from: string
  ends_at: string | null
  etag: string
  decided_at: string | null
  terms: PartnerTerms
}

export function isPartnerTerms(t: ContractTerms | PartnerTerms): t is PartnerTerms {
  return "view" in t
}
