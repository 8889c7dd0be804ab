/** One running total from the metering service: a contract's spend in one billing period. */
export interface SpendRow {
  total_id?: string
  contract_id: string
  advertiser_id: string
  contract_type?: "cpm" | "cpa"
  currency: string
  period_key: string
  status?: "open" | "closed"
  /** exact running amount of the period so far, decimal string */
  amount_exact: string
  budget_cap_per_period?: string | null
  budget_cap_total?: string | null
  minimum_commitment?: string | null
  counts?: Record<string, number>
  latest_event_time?: string | null
  updated_at?: string | null
}

export interface BudgetAlert {
  contract_id: string
  advertiser_id?: string | null
  currency?: string | null
  period_key?: string | null
  threshold_pct: number
  spent?: string | null
  cap?: string | null
  at: string
}

export interface SpendSnapshot {
  items: SpendRow[]
  alerts: BudgetAlert[]
}
