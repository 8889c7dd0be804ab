import { apiSlice } from "../../app/api"
import type { Page } from "../contracts/types"
import type { Invoice, Lineage, Statement } from "./types"

/** The invoicing service behind the gateway. */
export const INVOICING = "/invoicing"

export type DocKind = "invoices" | "statements"

export interface DocFilters {
  status?: string
  period_key?: string
  /** the advertiser (invoices) or partner (statements) id: the API's advertiser_id / partner_id filter */
  party?: string
  /** the document's whole number, or its start followed by * (the API's number filter) */
  number?: string
  cursor?: string | null
}

/** The list API's name of the party filter. */
export const PARTY_PARAM: Record<DocKind, string> = { invoices: "advertiser_id", statements: "partner_id" }

/** The API's rule for the number filter (openapi: letters, digits and -, one trailing *, at most 32 characters). */
export const NUMBER_MAX = 32
const NUMBER = /^[A-Za-z0-9-]+\*?$/

/** Why ``number`` cannot be searched for, or null when it can (an empty one is no filter). */
export function numberProblem(number: string | undefined): string | null {
  const n = number?.trim() ?? ""
  if (!n || (n.length <= NUMBER_MAX && NUMBER.test(n))) return null
  return `Enter a whole number such as INV-2026-000042, or its start followed by * (INV-2026-*): letters, digits and -, at most ${NUMBER_MAX} characters.`
}

/** The filters as the list API's query parameters; the console's URL carries the same ones, so a reload keeps them. */
export function filterParams(f: DocFilters, kind: DocKind): URLSearchParams {
  const q = new URLSearchParams()
  if (f.party?.trim()) q.set(PARTY_PARAM[kind], f.party.trim())
  if (f.status) q.set("status", f.status)
  if (f.period_key) q.set("period_key", f.period_key)
  if (f.number?.trim()) q.set("number", f.number.trim())
  return q
}

/** The filters in a URL's query (the inverse of filterParams). */
export function readFilters(q: URLSearchParams, kind: DocKind): DocFilters {
  const f: DocFilters = {}
  const party = q.get(PARTY_PARAM[kind])
  if (party) f.party = party
  for (const k of ["status", "period_key", "number"] as const) {
    const v = q.get(k)
    if (v) f[k] = v
  }
  return f
}

const qs = (f: DocFilters, kind: DocKind) => {
  const q = filterParams(f, kind)
  q.set("limit", "20")
  if (f.cursor) q.set("cursor", f.cursor)
  return q.toString()
}

export const invoicesApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    listInvoices: build.query<Page<Omit<Invoice, "lines">>, DocFilters>({
      query: (f) => `${INVOICING}/invoices?${qs(f, "invoices")}`,
      providesTags: ["InvoiceList"],
    }),
    listStatements: build.query<Page<Omit<Statement, "lines">>, DocFilters>({
      query: (f) => `${INVOICING}/statements?${qs(f, "statements")}`,
      providesTags: ["StatementList"],
    }),
    getInvoice: build.query<Invoice, string>({
      query: (id) => `${INVOICING}/invoices/${encodeURIComponent(id)}`,
      providesTags: (_r, _e, id) => [{ type: "Invoice", id }],
    }),
    getStatement: build.query<Statement, string>({
      query: (id) => `${INVOICING}/statements/${encodeURIComponent(id)}`,
      providesTags: (_r, _e, id) => [{ type: "Statement", id }],
    }),
    lineLineage: build.query<Lineage, { kind: DocKind; id: string; lineId: string }>({
      query: ({ kind, id, lineId }) => `${INVOICING}/${kind}/${encodeURIComponent(id)}/lines/${encodeURIComponent(lineId)}/lineage`,
    }),
    invoiceAction: build.mutation<Invoice, { id: string; action: "finalize" | "send" | "mark-paid" | "void"; reason?: string }>({
      query: ({ id, action, reason }) => ({
        url: `${INVOICING}/invoices/${encodeURIComponent(id)}/${action}`,
        method: "POST",
        body: reason ? { reason } : {},
      }),
      invalidatesTags: (_r, _e, a) => [{ type: "Invoice", id: a.id }, "InvoiceList"],
    }),
    statementAction: build.mutation<Statement, { id: string; action: "finalize" | "send" | "mark-paid" }>({
      query: ({ id, action }) => ({ url: `${INVOICING}/statements/${encodeURIComponent(id)}/${action}`, method: "POST", body: {} }),
      invalidatesTags: (_r, _e, a) => [{ type: "Statement", id: a.id }, "StatementList"],
    }),
  }),
})

export const {
  useListInvoicesQuery,
  useListStatementsQuery,
  useGetInvoiceQuery,
  useGetStatementQuery,
  useLazyLineLineageQuery,
  useInvoiceActionMutation,
  useStatementActionMutation,
} = invoicesApi
