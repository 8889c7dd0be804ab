import { createApi, fetchBaseQuery } from "@reduxjs/toolkit/query/react"
import type { RootState } from "./store"

/** Everything the console calls goes through the gateway on the same origin: `/api/<service>/...`. */
export const API_BASE = "/api"

export const authHeaders = (token: string | null): Record<string, string> =>
  token ? { Authorization: `Bearer ${token}` } : {}

/**
 * The ONE RTK Query api slice. Features add their endpoints with `apiSlice.injectEndpoints`
 * (src/features/<feature>/api.ts); tags let a write refresh what it changed.
 */
export const apiSlice = createApi({
  reducerPath: "api",
  baseQuery: fetchBaseQuery({
    // absolute, so the same code runs in the browser and under jsdom (undici needs a full URL)
    baseUrl: `${globalThis.location.origin}${API_BASE}`,
    prepareHeaders: (headers, { getState }) => {
      const token = (getState() as RootState).session.token
      if (token) headers.set("Authorization", `Bearer ${token}`)
      return headers
    },
  }),
  tagTypes: ["Contract", "ContractList", "Approvals", "Invoice", "InvoiceList", "Statement", "StatementList", "Spend"],
  endpoints: () => ({}),
})
