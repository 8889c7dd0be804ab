import { useEffect, useId, useState, type ReactNode } from "react"
import { saveCsv } from "../lib/csv"
import type { FetchBaseQueryError } from "@reduxjs/toolkit/query"
import type { SerializedError } from "@reduxjs/toolkit"
import { formatDateTime } from "../lib/money"
import { toProblem, type Problem } from "../lib/problems"

export function Loading({ what }: { what: string }) {
  return (
    <p className="loading" role="status" aria-live="polite">
      Loading {what}…
    </p>
  )
}

/** A failed request, as the service explained it (RFC 9457 problem). */
export function ProblemAlert({
  error,
  problem,
  what,
  onRetry,
}: {
  error?: FetchBaseQueryError | SerializedError | undefined
  problem?: Problem | null
  what?: string
  onRetry?: () => void
}) {
  const p = problem ?? toProblem(error)
  if (!p) return null
  // asking again cannot change a permanent answer (404, 403, 422...): Retry only where it can help
  const retryable = typeof p.status !== "number" || p.status >= 500 || p.status === 408 || p.status === 429
  return (
    <div className="alert alert-error" role="alert">
      <strong>
        {what ? `Could not ${what}: ` : ""}
        {p.title}
        {typeof p.status === "number" ? ` (${p.status})` : ""}
      </strong>
      {p.detail && <p>{p.detail}</p>}
      {p.errors.length > 0 && (
        <ul>
          {p.errors.map((e) => (
            <li key={e.field + e.message}>
              <code>{e.field}</code>: {e.message}
            </li>
          ))}
        </ul>
      )}
      {onRetry && retryable && (
        <button type="button" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  )
}

const TONES: Record<string, string> = {
  draft: "neutral",
  submitted: "warn",
  pending_approval: "warn",
  approved: "ok",
  scheduled: "info",
  active: "ok",
  terminating: "warn",
  ended: "neutral",
  rejected: "bad",
  superseded: "neutral",
  withdrawn: "neutral",
  finalized: "info",
  sent: "info",
  paid: "ok",
  void: "bad",
  on_pace: "ok",
  under: "warn",
  over: "bad",
  no_budget: "neutral",
  not_started: "neutral",
  outside_flight: "neutral",
}

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${TONES[status] ?? "neutral"}`}>{status.replace(/_/g, " ")}</span>
}

/** A labelled form control with its error announced and tied to it (aria-describedby). */
export function Field({
  label,
  error,
  hint,
  required,
  children,
}: {
  label: string
  error?: string | undefined
  hint?: string | undefined
  /** marked with an asterisk (explained once per form by RequiredNote) and aria-required */
  required?: boolean | undefined
  children: (props: { id: string; "aria-invalid": boolean; "aria-describedby": string | undefined; "aria-required"?: boolean }) => ReactNode
}) {
  const id = useId()
  const errorId = `${id}-error`
  const hintId = `${id}-hint`
  const describedBy = [error ? errorId : null, hint ? hintId : null].filter(Boolean).join(" ") || undefined
  return (
    <div className={`field${error ? " field-invalid" : ""}`}>
      {/* the asterisk stays outside the label, so the field's name is its label alone (aria-required says the rest) */}
      <span className="label-line">
        <label htmlFor={id}>{label}</label>
        {required && (
          <span className="required" aria-hidden="true">
            {" "}*
          </span>
        )}
      </span>
      {children({ id, "aria-invalid": !!error, "aria-describedby": describedBy, ...(required ? { "aria-required": true } : {}) })}
      {hint && (
        <small id={hintId} className="hint">
          {hint}
        </small>
      )}
      {error && (
        <small id={errorId} className="field-error" role="alert">
          {error}
        </small>
      )}
    </div>
  )
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>
}

export function RequiredNote() {
  return (
    <p className="hint">
      Fields marked <span className="required">*</span> are required.
    </p>
  )
}

/** An instant in the contract's zone, labelled; the viewer's own zone on hover. */
export function When({ at, zone }: { at: string | null | undefined; zone?: string | null | undefined }) {
  if (!at) return <>—</>
  return (
    <time dateTime={at} title={`your time: ${formatDateTime(at)}`}>
      {formatDateTime(at, zone)}
    </time>
  )
}

export const APP_NAME = "Tally console"

/** The document title of a route ("Contracts · Tally console"). */
export function usePageTitle(title: string) {
  useEffect(() => {
    document.title = `${title} · ${APP_NAME}`
  }, [title])
}

/** A table that scrolls sideways inside its own box on a narrow screen instead of widening the page. */
export function TableScroll({ children, label }: { children: ReactNode; label: string }) {
  return (
    // focusable so a keyboard user can scroll it too; named so the stop is announced
    <div className="table-scroll" role="region" aria-label={label} tabIndex={0}>
      {children}
    </div>
  )
}

/** "Export CSV" for a list as filtered: it reads every matching page, then saves the file; failures are said in words. */
export function ExportCsvButton({ what, build }: { what: string; build: () => Promise<{ fileName: string; csv: string }> }) {
  const [state, setState] = useState<{ status: "idle" | "loading" | "failed"; error?: string }>({ status: "idle" })
  const run = async () => {
    setState({ status: "loading" })
    try {
      const { fileName, csv } = await build()
      saveCsv(fileName, csv)
      setState({ status: "idle" })
    } catch (e) {
      setState({ status: "failed", error: (e as Error).message })
    }
  }
  return (
    <span className="export">
      <button type="button" disabled={state.status === "loading"} onClick={() => void run()}>
        {state.status === "loading" ? "Exporting…" : `Export ${what} (CSV)`}
      </button>
      {state.status === "failed" && (
        <span className="field-error" role="alert">
          Could not export: {state.error}
        </span>
      )}
    </span>
  )
}
