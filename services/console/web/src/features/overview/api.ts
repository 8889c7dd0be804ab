import { apiSlice, authHeaders, API_BASE } from "../../app/api"
import type { RootState } from "../../app/store"
import { streamEvents } from "../../lib/sse"
import { budgetAlertReceived, spendSampled, streamStatusChanged } from "./liveSpendSlice"
import type { BudgetAlert, SpendRow, SpendSnapshot } from "./types"

/** The metering service behind the gateway. */
export const SPEND = "/metering/v1/spend"

export function upsertRow(rows: SpendRow[], row: SpendRow): void {
  const i = rows.findIndex((r) => r.contract_id === row.contract_id && r.period_key === row.period_key)
  if (i === -1) rows.push(row)
  else rows[i] = { ...rows[i], ...row }
}

function parse(data: string): unknown {
  try {
    return JSON.parse(data)
  } catch {
    return null
  }
}

export const spendApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    getSpend: build.query<SpendSnapshot, void>({
      query: () => SPEND,
      transformResponse: (r: Partial<SpendSnapshot>) => ({ items: r.items ?? [], alerts: r.alerts ?? [] }),
      providesTags: ["Spend"],
      // server push: the spend stream updates this cache entry while a screen shows it
      async onCacheEntryAdded(_arg, { updateCachedData, cacheDataLoaded, cacheEntryRemoved, dispatch, getState }) {
        const abort = new AbortController()
        try {
          const first = await cacheDataLoaded
          dispatch(spendSampled({ at: Date.now(), rows: first.data.items, fromEvent: false }))
          first.data.alerts.forEach((a) => dispatch(budgetAlertReceived(a)))
          dispatch(streamStatusChanged("connecting"))
          const token = (getState() as RootState).session.token
          void streamEvents(
            `${globalThis.location.origin}${API_BASE}${SPEND}/stream`,
            authHeaders(token),
            (event) => {
              if (event.event === "budget_alert" || event.event === "alert") {
                const alert = parse(event.data) as BudgetAlert | null
                if (alert) dispatch(budgetAlertReceived(alert))
                return
              }
              const row = parse(event.data) as SpendRow | null
              if (!row || typeof row.contract_id !== "string" || typeof row.amount_exact !== "string") return
              let rows: SpendRow[] = []
              updateCachedData((draft) => {
                upsertRow(draft.items, row)
                rows = draft.items.map((r) => ({ ...r }))
              })
              dispatch(spendSampled({ at: Date.now(), rows, fromEvent: true }))
            },
            abort.signal,
            (s) => dispatch(streamStatusChanged(s)),
          )
        } catch {
          // the entry was removed before the first load finished: nothing to stream
        }
        await cacheEntryRemoved
        abort.abort()
        dispatch(streamStatusChanged("idle"))
      },
    }),
  }),
})

export const { useGetSpendQuery } = spendApi
