import { useEffect, useRef } from "react"
import type { Problem } from "../../lib/problems"
import { normalizeField } from "../../lib/problems"
import { labelFor } from "./fieldLabels"

/**
 * Every problem the API reported, in words, each linking to its field (which also shows it
 * inline). It takes the focus when it appears, so a keyboard or screen-reader user hears it.
 */
export function ErrorSummary({ problem }: { problem: Problem | null }) {
  const box = useRef<HTMLDivElement>(null)
  useEffect(() => {
    if (problem) box.current?.focus()
  }, [problem])
  if (!problem) return null
  const focus = (field: string) => {
    const el = document.querySelector<HTMLElement>(`[data-field="${normalizeField(field)}"]`)
    el?.focus()
  }
  const count = problem.errors.length
  return (
    <div className="alert alert-error" role="alert" tabIndex={-1} ref={box} aria-labelledby="error-summary-title">
      <strong id="error-summary-title">
        {count > 0 ? `${count === 1 ? "One field needs" : `${count} fields need`} your attention` : problem.title}
        {problem.detail && count === 0 ? `: ${problem.detail}` : ""}
      </strong>
      {count > 0 && (
        <ul>
          {problem.errors.map((e) => (
            <li key={e.field + e.message}>
              <button type="button" className="link" onClick={() => focus(e.field)}>
                {labelFor(e.field)}
              </button>
              : {e.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  )
}
