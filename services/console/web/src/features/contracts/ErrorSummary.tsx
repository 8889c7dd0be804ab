import type { Problem } from "../../lib/problems"
import { normalizeField } from "../../lib/problems"

/** Every problem the API reported, each linking to its field (which also shows it inline). */
export function ErrorSummary({ problem }: { problem: Problem | null }) {
  if (!problem) return null
  const focus = (field: string) => {
    const el = document.querySelector<HTMLElement>(`[data-field="${normalizeField(field)}"]`)
    el?.focus()
  }
  return (
    <div className="alert alert-error" role="alert" tabIndex={-1}>
      <strong>
        {problem.title}
        {problem.detail ? `: ${problem.detail}` : ""}
      </strong>
      {problem.errors.length > 0 && (
        <ul>
          {problem.errors.map((e) => (
            <li key={e.field + e.message}>
              <button type="button" className="link" onClick={() => focus(e.field)}>
                {e.field}
              </button>
              : {e.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  )
}
