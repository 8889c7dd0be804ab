import { useId, type ReactNode } from "react"
import type { FetchBaseQueryError } from "@reduxjs/toolkit/query"
import type { SerializedError } from "@reduxjs/toolkit"
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
      {onRetry && (
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
  withdrawn: "neutral",
  finalized: "info",
  sent: "info",
  paid: "ok",
  void: "bad",
}

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${TONES[status] ?? "neutral"}`}>{status.replace(/_/g, " ")}</span>
}

/** A labelled form control with its error announced and tied to it (aria-describedby). */
export function Field({
  label,
  error,
  hint,
  children,
}: {
  label: string
  error?: string | undefined
  hint?: string
  children: (props: { id: string; "aria-invalid": boolean; "aria-describedby": string | undefined }) => ReactNode
}) {
  const id = useId()
  const errorId = `${id}-error`
  const hintId = `${id}-hint`
  const describedBy = [error ? errorId : null, hint ? hintId : null].filter(Boolean).join(" ") || undefined
  return (
    <div className={`field${error ? " field-invalid" : ""}`}>
      <label htmlFor={id}>{label}</label>
      {children({ id, "aria-invalid": !!error, "aria-describedby": describedBy })}
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
