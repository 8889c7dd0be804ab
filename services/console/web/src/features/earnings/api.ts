import { apiSlice } from "../../app/api"
import type { Earning, EarningsList } from "./types"

/** The metering service behind the gateway: a partner's earnings per contract and period. */
export const EARNINGS = "/metering/v1/earnings"

/** Earnings are provisional until the period closes: asked again every minute while a page shows them. */
export const EARNINGS_REFRESH_MS = 60_000

export const earningsApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    listEarnings: build.query<Earning[], { status?: "open" | "closed" } | void>({
      query: (arg) => (arg?.status ? `${EARNINGS}?status=${arg.status}` : EARNINGS),
      transformResponse: (r: Partial<EarningsList>) => r.items ?? [],
    }),
  }),
})

export const { useListEarningsQuery } = earningsApi
