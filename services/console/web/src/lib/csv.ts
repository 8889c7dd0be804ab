import { API_BASE, authHeaders } from "../app/api"

/** At most this many pages (of 100) go into one export: a bound on the requests and the file. */
export const EXPORT_MAX_PAGES = 50
export const EXPORT_PAGE_SIZE = 100

const NUMBER = /^-?\d+(\.\d+)?$/

/** One CSV cell (RFC 4180 quoting); a text starting like a formula is prefixed with ' so a spreadsheet never runs it. */
export function csvCell(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return ""
  let text = String(value)
  if (/^[=+\-@\t\r]/.test(text) && !NUMBER.test(text)) text = `'${text}`
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

export function toCsv(header: string[], rows: (string | number | null | undefined)[][]): string {
  return [header, ...rows].map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n"
}

/**
 * Every item a list's filters match, page by page through the gateway (`path` without cursor or
 * limit). Throws when the list is longer than the export bound rather than exporting part of it.
 */
export async function fetchAllPages<T>(path: string, params: URLSearchParams, token: string | null): Promise<T[]> {
  const items: T[] = []
  let cursor: string | null = null
  for (let page = 0; page < EXPORT_MAX_PAGES; page++) {
    const q = new URLSearchParams(params)
    q.set("limit", String(EXPORT_PAGE_SIZE))
    if (cursor) q.set("cursor", cursor)
    const resp = await fetch(`${globalThis.location.origin}${API_BASE}${path}?${q.toString()}`, { headers: authHeaders(token) })
    if (!resp.ok) throw new Error(`the list could not be read: HTTP ${resp.status}`)
    const body = (await resp.json()) as { items: T[]; next_cursor: string | null }
    items.push(...body.items)
    cursor = body.next_cursor
    if (!cursor) return items
  }
  throw new Error(`more than ${EXPORT_MAX_PAGES * EXPORT_PAGE_SIZE} rows: narrow the filters to export`)
}

/** Hands a CSV text to the browser as a download. */
export function saveCsv(fileName: string, csv: string): void {
  const url = URL.createObjectURL(new Blob([csv], { type: "text/csv;charset=utf-8" }))
  const a = document.createElement("a")
  a.href = url
  a.download = fileName
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}
