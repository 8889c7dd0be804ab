import type { FetchBaseQueryError } from "@reduxjs/toolkit/query"
import type { SerializedError } from "@reduxjs/toolkit"

/** An RFC 9457 problem as the services send it, validation errors listed per field. */
export interface Problem {
  status: number | string
  title: string
  detail?: string
  errors: { field: string; message: string }[]
}

interface ProblemBody {
  title?: unknown
  detail?: unknown
  errors?: unknown
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null
}

export function toProblem(error: FetchBaseQueryError | SerializedError | undefined | null): Problem | null {
  if (!error) return null
  if ("status" in error) {
    const body: ProblemBody = isRecord(error.data) ? error.data : {}
    const errors = Array.isArray(body.errors)
      ? body.errors.filter(isRecord).map((e) => ({ field: typeof e.field === "string" ? e.field : "", message: typeof e.message === "string" ? e.message : "" }))
      : []
    if (typeof error.status === "number") {
      return {
        status: error.status,
        title: typeof body.title === "string" ? body.title : `HTTP ${error.status}`,
        detail: typeof body.detail === "string" ? body.detail : undefined,
        errors,
      }
    }
    const detail = "error" in error ? error.error : undefined
    return { status: error.status, title: "The request failed", detail, errors }
  }
  return { status: "CLIENT_ERROR", title: error.name ?? "Error", detail: error.message, errors: [] }
}

/** Field path as the API names it (`terms.cpm.rate_card.bands[0].rate_cpm`) → the editor's key. */
export function normalizeField(field: string): string {
  return field.replace(/^(body|terms)\./, "").replace(/\[(\d+)\]/g, ".$1")
}

export function fieldErrors(problem: Problem | null): Record<string, string> {
  const out: Record<string, string> = {}
  for (const e of problem?.errors ?? []) {
    const key = normalizeField(e.field)
    out[key] = out[key] ? `${out[key]}; ${e.message}` : e.message
  }
  return out
}
