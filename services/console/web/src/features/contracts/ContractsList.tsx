import { useState } from "react"
import { Link } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { Empty, ExportCsvButton, Field, Loading, ProblemAlert, StatusBadge, TableScroll, usePageTitle, When } from "../../components/ui"
import { fetchAllPages, toCsv } from "../../lib/csv"
import { PartyName, usePartyNames } from "../parties/names"
import { can, selectToken, selectUser } from "../session/sessionSlice"
import { CONTRACTS, useListContractsQuery } from "./api"
import type { Contract, ContractFilters, ContractStatus } from "./types"

const STATUSES: ContractStatus[] = ["draft", "pending_approval", "scheduled", "active", "terminating", "ended"]

export function ContractsList() {
  const user = useAppSelector(selectUser)
  const [filters, setFilters] = useState<ContractFilters>({ status: "", contract_type: "", name: "", advertiser_id: "" })
  const [cursors, setCursors] = useState<(string | null)[]>([null])
  const cursor = cursors.at(-1) ?? null
  usePageTitle("Contracts")
  const token = useAppSelector(selectToken)
  const exportCsv = async () => {
    const q = new URLSearchParams()
    if (filters.status) q.set("status", filters.status)
    if (filters.contract_type) q.set("contract_type", filters.contract_type)
    if (filters.advertiser_id) q.set("advertiser_id", filters.advertiser_id)
    if (filters.name) q.set("q", filters.name)
    const all = await fetchAllPages<Contract>(CONTRACTS, q, token)
    return {
      fileName: "contracts.csv",
      csv: toCsv(["id", "name", "advertiser_id", "contract_type", "currency", "time_zone", "status", "current_version", "created_at"],
        all.map((c) => [c.id, c.name, c.advertiser_id, c.contract_type, c.currency, c.time_zone, c.status, c.current_version, c.created_at])),
    }
  }
  const { data, error, isFetching, isLoading, refetch } = useListContractsQuery({ ...filters, cursor })
  const names = usePartyNames(data?.items.map((c) => c.advertiser_id) ?? [])
  const change = (patch: Partial<ContractFilters>) => {
    setFilters({ ...filters, ...patch })
    setCursors([null])
  }

  return (
    <section aria-labelledby="contracts-heading">
      <div className="page-head">
        <h1 id="contracts-heading">Contracts</h1>
        {can.draftContracts(user) && (
          <Link className="button primary" to="/contracts/new">
            New contract
          </Link>
        )}
      </div>
      <form className="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <Field label="Search by name">
          {(p) => <input {...p} type="search" value={filters.name} onChange={(e) => change({ name: e.target.value })} />}
        </Field>
        <Field label="Status">
          {(p) => (
            <select {...p} value={filters.status} onChange={(e) => change({ status: e.target.value as ContractStatus | "" })}>
              <option value="">any</option>
              {STATUSES.map((s) => (
                <option key={s} value={s}>
                  {s.replace(/_/g, " ")}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Pricing">
          {(p) => (
            <select {...p} value={filters.contract_type} onChange={(e) => change({ contract_type: e.target.value as "cpm" | "cpa" | "" })}>
              <option value="">any</option>
              <option value="cpm">CPM</option>
              <option value="cpa">CPA</option>
            </select>
          )}
        </Field>
        {!can.isTenant(user) && (
          <Field label="Advertiser id">
            {(p) => <input {...p} value={filters.advertiser_id} onChange={(e) => change({ advertiser_id: e.target.value })} />}
          </Field>
        )}
      </form>
      <div className="actions">
        <ExportCsvButton what="contracts" build={exportCsv} />
      </div>
      {isLoading && <Loading what="contracts" />}
      <ProblemAlert error={error} what="load contracts" onRetry={() => void refetch()} />
      {data && data.items.length === 0 && <Empty>No contracts match.</Empty>}
      {data && data.items.length > 0 && (
        <TableScroll label="Contracts">
        <table className="table" aria-busy={isFetching}>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Advertiser</th>
              <th scope="col">Pricing</th>
              <th scope="col">Status</th>
              <th scope="col">Current</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            {data.items.map((c) => (
              <tr key={c.id}>
                <td>
                  <Link to={`/contracts/${encodeURIComponent(c.id)}`}>{c.name}</Link>
                </td>
                <td data-testid={`advertiser-${c.id}`}><PartyName type="advertiser" id={c.advertiser_id} names={names} /></td>
                <td>
                  {c.contract_type.toUpperCase()} · {c.currency}
                </td>
                <td>
                  <StatusBadge status={c.status} />
                </td>
                <td>{c.current_version ? `v${c.current_version}` : "—"}</td>
                <td><When at={c.created_at} zone={c.time_zone} /></td>
              </tr>
            ))}
          </tbody>
        </table>
        </TableScroll>
      )}
      {(cursors.length > 1 || data?.next_cursor) && (
      <nav className="pager" aria-label="Pages">
        <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
          ← Previous
        </button>
        <span>Page {cursors.length}</span>
        <button type="button" disabled={!data?.next_cursor} onClick={() => data?.next_cursor && setCursors([...cursors, data.next_cursor])}>
          Next →
        </button>
      </nav>
      )}
    </section>
  )
}
