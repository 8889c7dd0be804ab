import { useState } from "react"
import { Link, useSearchParams } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { PartyName, usePartyNames } from "../parties/names"
import { can, selectToken, selectUser } from "../session/sessionSlice"
import { Empty, ExportCsvButton, Field, Loading, ProblemAlert, StatusBadge, TableScroll, usePageTitle } from "../../components/ui"
import { fetchAllPages, toCsv } from "../../lib/csv"
import { formatMoney } from "../../lib/money"
import { filterParams, INVOICING, NUMBER_MAX, numberProblem, readFilters, useListInvoicesQuery, useListStatementsQuery, type DocFilters, type DocKind } from "./api"
import { InvoicePreview } from "./InvoicePreview"
import type { Invoice, ListItem, Statement } from "./types"

/**
 * The list's filters, kept in the URL's query (?advertiser_id=…&number=…) so a reload or a shared link
 * shows the same list. They are read from the URL when the page opens; the inputs then follow local
 * state, because the router applies a URL change in a transition and a controlled input fed by it
 * would lose keystrokes.
 */
function useUrlFilters(kind: DocKind): [DocFilters, (f: DocFilters) => void] {
  const [params, setParams] = useSearchParams()
  const [filters, setFilters] = useState<DocFilters>(() => readFilters(params, kind))
  const change = (f: DocFilters) => {
    setFilters(f)
    setParams(filterParams(f, kind), { replace: true })
  }
  return [filters, change]
}

const isFiltered = (f: DocFilters) => !!(f.status || f.period_key || f.party?.trim() || f.number?.trim())

/** The list as filtered, every page, as CSV (amounts are the API's exact decimal strings). */
function useExport(kind: "invoices" | "statements", filters: DocFilters) {
  const token = useAppSelector(selectToken)
  return async () => {
    if (kind === "invoices") {
      const all = await fetchAllPages<Omit<Invoice, "lines">>(`${INVOICING}/invoices`, filterParams(filters, "invoices"), token)
      return { fileName: "invoices.csv", csv: toCsv(["id", "number", "advertiser_id", "period_key", "status", "currency", "total", "issue_date", "due_date"],
        all.map((d) => [d.id, d.number, d.advertiser_id, d.period_key, d.status, d.currency, d.total, d.issue_date, d.due_date])) }
    }
    const all = await fetchAllPages<Omit<Statement, "lines">>(`${INVOICING}/statements`, filterParams(filters, "statements"), token)
    return { fileName: "payout-statements.csv", csv: toCsv(["id", "number", "partner_id", "period_key", "status", "currency", "lines_total", "carried_in", "amount_payable", "carried_out"],
      all.map((d) => [d.id, d.number, d.partner_id, d.period_key, d.status, d.currency, d.lines_total, d.carried_in, d.amount_payable, d.carried_out])) }
  }
}

function Filters({ value, onChange, statuses, party, number }: {
  value: DocFilters; onChange: (f: DocFilters) => void; statuses: string[]; party?: string | undefined
  /** the label of the number search, when the list offers one */
  number?: string | undefined
}) {
  return (
    <form className="filters" role="search" onSubmit={(e) => e.preventDefault()}>
      {number && (
        <Field label={number} hint="the whole number, or its start and * (INV-2026-*)" error={numberProblem(value.number) ?? undefined}>
          {(p) => <input {...p} type="search" maxLength={NUMBER_MAX} spellCheck={false} autoComplete="off" value={value.number ?? ""}
            onChange={(e) => onChange({ ...value, number: e.target.value, cursor: null })} />}
        </Field>
      )}
      {party && (
        <Field label={party} hint="the exact id">
          {(p) => <input {...p} value={value.party ?? ""} onChange={(e) => onChange({ ...value, party: e.target.value, cursor: null })} />}
        </Field>
      )}
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
  const names = usePartyNames(items.map((d) => ("advertiser_id" in d ? d.advertiser_id : d.partner_id)))
  return (
    <TableScroll label={kind === "invoices" ? "Invoices" : "Payout statements"}>
    <table className="table">
      <thead>
        <tr>
          <th scope="col">Number</th>
          <th scope="col">{kind === "invoices" ? "Advertiser" : "Partner"}</th>
          <th scope="col">Period</th>
          <th scope="col">Status</th>
          {kind === "statements" && <th scope="col" className="num">Earned</th>}
          {kind === "statements" && <th scope="col" className="num">Carried in</th>}
          <th scope="col" className="num">{kind === "invoices" ? "Total" : "Payable"}</th>
          {kind === "statements" && <th scope="col" className="num">Carried forward</th>}
        </tr>
      </thead>
      <tbody>
        {items.map((d) => (
          <tr key={d.id} data-testid={`doc-${d.id}`}>
            <td>
              <Link to={`/${kind}/${d.id}`}>{d.number ?? `draft ${d.id.slice(0, 8)}`}</Link>
            </td>
            <td>
              {"advertiser_id" in d
                ? <PartyName type="advertiser" id={d.advertiser_id} names={names} />
                : <PartyName type="partner" id={d.partner_id} names={names} />}
            </td>
            <td>{d.period_key}</td>
            <td><StatusBadge status={d.status} /></td>
            {"advertiser_id" in d ? (
              <td className="num">{formatMoney(d.total, d.currency)}</td>
            ) : (
              <>
                <td className="num">{formatMoney(d.lines_total, d.currency)}</td>
                <td className="num">{formatMoney(d.carried_in ?? "0", d.currency)}</td>
                <td className="num">{formatMoney(d.amount_payable ?? d.lines_total, d.currency)}</td>
                <td className="num" data-testid={`carried-out-${d.id}`}>{formatMoney(d.carried_out ?? "0", d.currency)}</td>
              </>
            )}
          </tr>
        ))}
      </tbody>
    </table>
    </TableScroll>
  )
}

/** Shown only when there is another page to go to: a pager with both buttons dead says nothing. */
function Pager({ pages, next, onPrev, onNext }: { pages: number; next: string | null | undefined; onPrev: () => void; onNext: () => void }) {
  if (pages <= 1 && !next) return null
  return (
    <nav className="pager" aria-label="Pages">
      <button type="button" disabled={pages <= 1} onClick={onPrev}>← Previous</button>
      <span>Page {pages}</span>
      <button type="button" disabled={!next} onClick={onNext}>Next →</button>
    </nav>
  )
}

/** Why a list is empty, and when documents will appear in it. */
function NoDocuments({ kind, filtered }: { kind: "invoices" | "statements"; filtered: boolean }) {
  const what = kind === "invoices" ? "invoices" : "payout statements"
  return (
    <div className="empty-state">
      <Empty>{filtered ? `No ${what} match these filters.` : `No ${what} yet.`}</Empty>
      <p className="hint">
        {kind === "invoices"
          ? "An invoice is drafted when a billing period closes: metering closes a contract's period two hours after it ends (in the contract's time zone), and the draft appears here for finance to review and finalize."
          : "A payout statement is drafted for each partner when a billing period closes (two hours after it ends, in the contract's time zone); it carries any balance below the minimum payout forward."}
      </p>
    </div>
  )
}

export function InvoicesList() {
  usePageTitle("Invoices")
  const user = useAppSelector(selectUser)
  // the spend API behind the preview serves finance, operators and the advertiser itself
  const showPreview = can.seeSpend(user)
  const [filters, setFilters] = useUrlFilters("invoices")
  const exportCsv = useExport("invoices", filters)
  const [cursors, setCursors] = useState<(string | null)[]>([null])
  // documents appear as periods close: a change of filter always asks the server again; a number the
  // API would refuse is explained at its field instead of asked for
  const { data, error, isLoading, refetch } = useListInvoicesQuery({ ...filters, cursor: cursors.at(-1) ?? null },
    { refetchOnMountOrArgChange: true, skip: numberProblem(filters.number) !== null })
  return (
    <section aria-labelledby="invoices-heading">
      <h1 id="invoices-heading">Invoices</h1>
      <Filters value={filters} party={can.isTenant(user) ? undefined : "Advertiser"} number="Invoice number" statuses={["draft", "finalized", "sent", "paid", "void"]} onChange={(f) => { setFilters(f); setCursors([null]) }} />
      <div className="actions">
        <ExportCsvButton what="invoices" build={exportCsv} />
      </div>
      {isLoading && <Loading what="invoices" />}
      <ProblemAlert error={error} what="load invoices" onRetry={() => void refetch()} />
      {data && (data.items.length === 0 ? <NoDocuments kind="invoices" filtered={isFiltered(filters)} /> : <DocTable items={data.items} kind="invoices" />)}
      <Pager pages={cursors.length} next={data?.next_cursor} onPrev={() => setCursors(cursors.slice(0, -1))}
        onNext={() => data?.next_cursor && setCursors([...cursors, data.next_cursor])} />
      {showPreview && <InvoicePreview />}
    </section>
  )
}

export function StatementsList() {
  usePageTitle("Payout statements")
  const user = useAppSelector(selectUser)
  const [filters, setFilters] = useUrlFilters("statements")
  const exportCsv = useExport("statements", filters)
  const [cursors, setCursors] = useState<(string | null)[]>([null])
  const { data, error, isLoading, refetch } = useListStatementsQuery({ ...filters, cursor: cursors.at(-1) ?? null },
    { refetchOnMountOrArgChange: true })
  return (
    <section aria-labelledby="statements-heading">
      <h1 id="statements-heading">Payout statements</h1>
      <Filters value={filters} party={can.isTenant(user) ? undefined : "Partner"} statuses={["draft", "finalized", "sent", "paid"]} onChange={(f) => { setFilters(f); setCursors([null]) }} />
      <div className="actions">
        <ExportCsvButton what="payout statements" build={exportCsv} />
      </div>
      {isLoading && <Loading what="payout statements" />}
      <ProblemAlert error={error} what="load payout statements" onRetry={() => void refetch()} />
      {data && (data.items.length === 0 ? <NoDocuments kind="statements" filtered={isFiltered(filters)} /> : <DocTable items={data.items} kind="statements" />)}
      <Pager pages={cursors.length} next={data?.next_cursor} onPrev={() => setCursors(cursors.slice(0, -1))}
        onNext={() => data?.next_cursor && setCursors([...cursors, data.next_cursor])} />
    </section>
  )
}
