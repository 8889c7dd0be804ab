import { useState } from "react"
import { Field, Loading, ProblemAlert } from "../../components/ui"
import { useDiffVersionsQuery } from "./api"
import type { ContractVersion } from "./types"

const show = (v: unknown): string => (v === null || v === undefined ? "—" : typeof v === "string" ? v : JSON.stringify(v))

export function DiffView({ contractId, versions }: { contractId: string; versions: ContractVersion[] }) {
  const numbers = versions.map((v) => v.version)
  const [from, setFrom] = useState(numbers.length > 1 ? (numbers.at(-2) ?? 1) : (numbers[0] ?? 1))
  const [to, setTo] = useState(numbers.at(-1) ?? 1)
  const { data, error, isFetching } = useDiffVersionsQuery({ contractId, from, to }, { skip: numbers.length < 2 || from === to })
  if (numbers.length < 2) return <p className="hint">One version only: nothing to compare yet.</p>
  return (
    <div>
      <div className="grid inline">
        <Field label="Compare version">
          {(p) => (
            <select {...p} value={from} onChange={(e) => setFrom(Number(e.target.value))}>
              {numbers.map((n) => (
                <option key={n} value={n}>
                  v{n}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="with version">
          {(p) => (
            <select {...p} value={to} onChange={(e) => setTo(Number(e.target.value))}>
              {numbers.map((n) => (
                <option key={n} value={n}>
                  v{n}
                </option>
              ))}
            </select>
          )}
        </Field>
      </div>
      {from === to && <p className="hint">Pick two different versions.</p>}
      {isFetching && <Loading what="differences" />}
      <ProblemAlert error={error} what="compare the versions" />
      {data && from !== to && (
        data.changes.length === 0 ? (
          <p>No differences between v{from} and v{to}.</p>
        ) : (
          <table className="table compact diff" aria-label={`Differences from v${from} to v${to}`}>
            <thead>
              <tr>
                <th scope="col">Field</th>
                <th scope="col">v{from}</th>
                <th scope="col">v{to}</th>
              </tr>
            </thead>
            <tbody>
              {data.changes.map((c) => (
                <tr key={c.path} className={`change-${c.change}`}>
                  <td>
                    <code>{c.path}</code>
                  </td>
                  <td className="old">{show(c.from)}</td>
                  <td className="new">{show(c.to)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      )}
    </div>
  )
}
