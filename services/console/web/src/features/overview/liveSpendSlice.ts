import { createSlice, type PayloadAction } from "@reduxjs/toolkit"
import { addDecimals } from "../../lib/decimal"
import type { BudgetAlert, SpendRow } from "./types"

export type StreamStatus = "idle" | "connecting" | "open" | "reconnecting"

export interface SpendPoint {
  at: number
  /** total running spend across the contracts in view, per currency (decimal strings) */
  totals: Record<string, string>
}

export interface LiveSpendState {
  status: StreamStatus
  points: SpendPoint[]
  alerts: BudgetAlert[]
  eventsReceived: number
}

/** Bounded: the chart keeps the latest points and alerts only. */
export const MAX_POINTS = 120
export const MAX_ALERTS = 50

const initialState: LiveSpendState = { status: "idle", points: [], alerts: [], eventsReceived: 0 }

export function totalsByCurrency(rows: SpendRow[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const r of rows) out[r.currency] = addDecimals(out[r.currency] ?? "0", r.amount_exact)
  return out
}

export const liveSpendSlice = createSlice({
  name: "liveSpend",
  initialState,
  reducers: {
    streamStatusChanged: (state, action: PayloadAction<StreamStatus>) => {
      state.status = action.payload
    },
    spendSampled: (state, action: PayloadAction<{ at: number; rows: SpendRow[]; fromEvent: boolean }>) => {
      state.points.push({ at: action.payload.at, totals: totalsByCurrency(action.payload.rows) })
      if (state.points.length > MAX_POINTS) state.points.splice(0, state.points.length - MAX_POINTS)
      if (action.payload.fromEvent) state.eventsReceived += 1
    },
    budgetAlertReceived: (state, action: PayloadAction<BudgetAlert>) => {
      const a = action.payload
      const seen = state.alerts.some(
        (x) => x.contract_id === a.contract_id && x.period_key === a.period_key && x.threshold_pct === a.threshold_pct,
      )
      if (!seen) state.alerts.unshift(a)
      if (state.alerts.length > MAX_ALERTS) state.alerts.length = MAX_ALERTS
    },
    liveSpendReset: () => initialState,
  },
  selectors: {
    selectStreamStatus: (s) => s.status,
    selectSpendPoints: (s) => s.points,
    selectLiveAlerts: (s) => s.alerts,
    selectEventsReceived: (s) => s.eventsReceived,
  },
})

export const { streamStatusChanged, spendSampled, budgetAlertReceived, liveSpendReset } = liveSpendSlice.actions
export const { selectStreamStatus, selectSpendPoints, selectLiveAlerts, selectEventsReceived } = liveSpendSlice.selectors
