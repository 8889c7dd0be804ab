import { useState } from "react"
import { Link } from "react-router"
import { Empty, Field, Loading, ProblemAlert, StatusBadge } from "../../components/ui"
import { formatMoney } from "../../lib/money"
import { useListInvoicesQuery, useListStatementsQuery, type DocFilters } from "./api"
import type { ListItem } from "./types"

function Filters({ value, onChange, statuses }: { value: DocFilters; onChange: (f: DocFilters) => void; statuses: string[] }) {
  return (
    <form className="filters" role="search" onSubmit={(e) => e.preventDefault()}>
      <Field label="Status">
        {(p) => (
          <select {...p} value={value.status ?? ""} onChange={(e) => onChange({ ...value, status: e.target.value, cursor: null })}>
            <option value="">any</option>
            {statuses.map((s) => (
              <option key={s} value={s}>{s}</option>
            ))}
          </select>
        )}
      </Field>
      <Field label="Period" hint="e.g. 2026-03">
        {(p) => <input {...p} value={value.period_key ?? ""} onChange={(e) => onChange({ ...value, period_key: e.target.value, cursor: null })} />}
      </Field>
    </form>
  )
}

function DocTable({ items, kind }: { items: ListItem[]; kind: "invoices" | "statements" }) {
  return (
    <table className="table">
      <thead>
        <tr>
          <th scope="col">Number</th>
          <th scope="col">{kind === "invoices" ? "Advertiser" : "Partner"}</th>
          <th scope="col">Period</th>
          <th scope="col">Status</th>
          <th scope="col" className="num">{kind === "invoices" ? "Total" : "Payable"}</th>
        </tr>
      </thead>
      <tbody>
        {items.map((d) => (
          <tr key={d.id} data-testid={`doc-${d.id}`}>
            <td>
              <Link to={`/${kind}/${d.id}`}>{d.number ?? `draft ${d.id.slice(0, 8)}`}</Link>
            </td>
            <td>{"advertiser_id" in d ? d.advertiser_id : d.partner_id}</td>
            <td>{d.period_key}</td>
            <td><StatusBadge status={d.status} /></td>
            <td className="num">
              {"total" in d ? formatMoney(d.total, d.currency) : formatMoney(d.amount_payable ?? d.lines_total, d.currency)}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  )
}

function Pager({ pages, next, onPrev, onNext }: { pages: number; next: string | null | undefined; onPrev: () => void; onNext: () => void }) {
  return (
    <nav className="pager" aria-label="Pages">
      <button type="button" disabled={pages <= 1} onClick={onPrev}>← Previous</button>
      <span>Page {pages}</span>
      <button type="button" disabled={!next} onClick={onNext}>Next →</button>
    </nav>
  )
}

export function InvoicesList() {
  const [filters, setFilters] = useState<DocFilters>({})
  const [cursors, setCursors] = useState<(string | null)[]>([null])
  // documents appear as periods close: a change of filter always asks the server again
  const { data, error, isLoading, refetch } = useListInvoicesQuery({ ...filters, cursor: cursors.at(-1) ?? null },
    { refetchOnMountOrArgChange: true })
  return (
    <section aria-labelledby="invoices-heading">
      <h1 id="invoices-heading">Invoices</h1>
      <Filters value={filters} statuses={["draft", "finalized", "sent", "paid", "void"]} onChange={(f) => { setFilters(f); setCursors([null]) }} />
      {isLoading && <Loading what="invoices" />}
      <ProblemAlert error={error} what="load invoices" onRetry={() => void refetch()} />
      {data && (data.items.length === 0 ? <Empty>No invoices.</Empty> : <DocTable items={data.items} kind="invoices" />)}
      <Pager pages={cursors.length} next={data?.next_cursor} onPrev={() => setCursors(cursors.slice(0, -1))}
        onNext={() => data?.next_cursor && setCursors([...cursors, data.next_cursor])} />
    </section>
  )
}

export function StatementsList() {
  const [filters, setFilters] = useState<DocFilters>({})
  const [cursors, setCursors] = useState<(string | null)[]>([null])
  const { data, error, isLoading, refetch } = useListStatementsQuery({ ...filters, cursor: cursors.at(-1) ?? null },
    { refetchOnMountOrArgChange: true })
  return (
    <section aria-labelledby="statements-heading">
      <h1 id="statements-heading">Payout statements</h1>
      <Filters value={filters} statuses={["draft", "finalized", "sent", "paid"]} onChange={(f) => { setFilters(f); setCursors([null]) }} />
      {isLoading && <Loading what="payout statements" />}
      <ProblemAlert error={error} what="load payout statements" onRetry={() => void refetch()} />
      {data && (data.items.length === 0 ? <Empty>No payout statements.</Empty> : <DocTable items={data.items} kind="statements" />)}
      <Pager pages={cursors.length} next={data?.next_cursor} onPrev={() => setCursors(cursors.slice(0, -1))}
        onNext={() => data?.next_cursor && setCursors([...cursors, data.next_cursor])} />
    </section>
  )
}
