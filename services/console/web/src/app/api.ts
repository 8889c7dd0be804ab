import { createApi, fetchBaseQuery, type BaseQueryFn, type FetchArgs, type FetchBaseQueryError } from "@reduxjs/toolkit/query/react"
import { saveSession, sessionExpired } from "../features/session/sessionSlice"
import type { RootState } from "./store"

/** Everything the console calls goes through the gateway on the same origin: `/api/<service>/...`. */
export const API_BASE = "/api"

export const authHeaders = (token: string | null): Record<string, string> =>
  token ? { Authorization: `Bearer ${token}` } : {}

/**
 * The ONE RTK Query api slice. Features add their endpoints with `apiSlice.injectEndpoints`
 * (src/features/<feature>/api.ts); tags let a write refresh what it changed.
 */
const rawBaseQuery = fetchBaseQuery({
  // absolute, so the same code runs in the browser and under jsdom (undici needs a full URL)
  baseUrl: `${globalThis.location.origin}${API_BASE}`,
  prepareHeaders: (headers, { getState }) => {
    const token = (getState() as RootState).session.token
    if (token) headers.set("Authorization", `Bearer ${token}`)
    return headers
  },
})

/**
 * A 401 means the token expired or was never valid: no page can recover from that, so the
 * session ends and the app goes back to sign-in, saying why (rather than every page showing 401).
 */
export const baseQuery: BaseQueryFn<string | FetchArgs, unknown, FetchBaseQueryError> = async (args, api, extra) => {
  const result = await rawBaseQuery(args, api, extra)
  if (result.error?.status === 401 && (api.getState() as RootState).session.token) {
    saveSession(null)
    api.dispatch(sessionExpired("Your session has expired or its token is no longer valid: sign in again."))
  }
  return result
}

export const apiSlice = createApi({
  reducerPath: "api",
  baseQuery,
  tagTypes: ["Contract", "ContractList", "Approvals", "Invoice", "InvoiceList", "Statement", "StatementList", "Spend"],
  endpoints: () => ({}),
})
