import { apiSlice } from "../../app/api"
import type { Granularity, Pacing, PacingList, Series } from "./types"

/** The pacing service behind the gateway. */
export const PACING = "/pacing/v1/pacing"

export const pacingApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    /** Every period of one contract the pacing service knows, oldest first. */
    getContractPacing: build.query<Pacing[], string>({
      query: (contractId) => `${PACING}?${new URLSearchParams({ contract_id: contractId }).toString()}`,
      transformResponse: (r: PacingList) => r.items,
      providesTags: ["Spend"],
    }),
    getPacingSeries: build.query<Series, { contractId: string; periodKey?: string; granularity: Granularity }>({
      query: ({ contractId, periodKey, granularity }) => {
        const q = new URLSearchParams({ granularity })
        if (periodKey) q.set("period_key", periodKey)
        return `${PACING}/${encodeURIComponent(contractId)}/series?${q.toString()}`
      },
      providesTags: ["Spend"],
    }),
  }),
})

export const { useGetContractPacingQuery, useGetPacingSeriesQuery } = pacingApi
