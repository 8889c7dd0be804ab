import type { components } from "../../api/metering"

/** One running total from the metering service (its OpenAPI document, generated into src/api/metering.ts). */
export type RunningTotal = components["schemas"]["RunningTotal"]

/**
 * A contract's spend in one billing period, as the overview keeps it: the fields every row has, the
 * rest of the running total when it came with it (a stream event may carry only what changed).
 */
export type SpendRow = Pick<RunningTotal, "contract_id" | "advertiser_id" | "currency" | "period_key" | "amount_exact">
  & Partial<RunningTotal>

/** A threshold of a budget cap, computed in the console from the totals in view (the spend API serves no alerts). */
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
