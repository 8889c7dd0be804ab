import { useState } from "react"
import { Field, Loading, ProblemAlert, TableScroll } from "../../components/ui"
import { useDiffVersionsQuery } from "./api"
import { formatFieldValue, labelFor } from "./fieldLabels"
import type { Change, ContractVersion } from "./types"

/** The differences in words: each field by its label, before → after with units and currency. */
export function DiffTable({ changes, from, to, currency, zone }: { changes: Change[]; from: number; to: number; currency: string; zone: string }) {
  if (changes.length === 0) return <p>No differences between v{from} and v{to}.</p>
  return (
    <TableScroll label={`Differences from v${from} to v${to}`}>
      <table className="table compact diff">
        <caption className="sr-only">Differences from v{from} to v{to}</caption>
        <thead>
          <tr>
            <th scope="col">Field</th>
            <th scope="col">v{from}</th>
            <th scope="col">v{to}</th>
          </tr>
        </thead>
        <tbody>
          {changes.map((c) => (
            <tr key={c.path} className={`change-${c.change}`}>
              <th scope="row" title={c.path}>
                {labelFor(c.path)}
              </th>
              <td className="old">{c.change === "added" ? "not set" : formatFieldValue(c.path, c.from, currency, zone)}</td>
              <td className="new">
                <span aria-hidden="true">→ </span>
                {c.change === "removed" ? "removed" : formatFieldValue(c.path, c.to, currency, zone)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </TableScroll>
  )
}

/** One version's changes against the one before it (the approvals queue shows it inline). */
export function ChangesFromPrevious({ contractId, version, currency, zone }: { contractId: string; version: number; currency: string; zone: string }) {
  const { data, error, isLoading } = useDiffVersionsQuery({ contractId, from: version - 1, to: version }, { skip: version < 2 })
  if (version < 2) return <p className="hint">The first version: every term is new.</p>
  if (isLoading) return <Loading what="changes" />
  if (error) return <ProblemAlert error={error} what="compare with the previous version" />
  return data ? <DiffTable changes={data.changes} from={version - 1} to={version} currency={currency} zone={zone} /> : null
}

/**
 * Compare two versions. Until the viewer picks, it compares the latest two, so an amendment
 * drafted while the page is open is compared at once (no reload).
 */
export function DiffView({ contractId, versions, currency, zone }: { contractId: string; versions: ContractVersion[]; currency: string; zone: string }) {
  const numbers = versions.map((v) => v.version)
  const [picked, setPicked] = useState<{ from: number; to: number } | null>(null)
  const latest = numbers.at(-1) ?? 1
  const from = picked?.from ?? (numbers.length > 1 ? (numbers.at(-2) ?? 1) : latest)
  const to = picked?.to ?? latest
  const { data, error, isFetching } = useDiffVersionsQuery({ contractId, from, to }, { skip: numbers.length < 2 || from === to })
  if (numbers.length < 2) return <p className="hint">One version only: nothing to compare yet.</p>
  return (
    <div>
      <div className="grid inline">
        <Field label="Compare version">
          {(p) => (
            <select {...p} value={from} onChange={(e) => setPicked({ from: Number(e.target.value), to })}>
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
            <select {...p} value={to} onChange={(e) => setPicked({ from, to: Number(e.target.value) })}>
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
      {data && from !== to && data.from_version === from && data.to_version === to && (
        <DiffTable changes={data.changes} from={from} to={to} currency={currency} zone={zone} />
      )}
    </div>
  )
}
