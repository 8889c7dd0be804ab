import { useState, type FormEvent } from "react"
import { Link, useParams } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { Field, Loading, ProblemAlert, StatusBadge, TableScroll, usePageTitle } from "../../components/ui"
import { downloadFile } from "../../lib/download"
import { formatDateTime, formatMoney } from "../../lib/money"
import { can, selectToken, selectUser } from "../session/sessionSlice"
import {
  INVOICING,
  useGetInvoiceQuery,
  useGetStatementQuery,
  useInvoiceActionMutation,
  useLazyLineLineageQuery,
  useStatementActionMutation,
  type DocKind,
} from "./api"
import type { DocLine, Invoice, Statement } from "./types"

function Downloads({ kind, doc }: { kind: DocKind; doc: Invoice | Statement }) {
  const token = useAppSelector(selectToken)
  const [error, setError] = useState<string | null>(null)
  const get = (fmt: "pdf" | "csv") => {
    setError(null)
    downloadFile(`${INVOICING}/${kind}/${doc.id}/export.${fmt}`, token, `${doc.number ?? doc.id}.${fmt}`).catch((e: unknown) =>
      setError((e as Error).message),
    )
  }
  return (
    <div className="actions">
      <button type="button" onClick={() => get("pdf")}>Download PDF</button>
      <button type="button" onClick={() => get("csv")}>Download CSV</button>
      {error && <span role="alert" className="field-error">{error}</span>}
    </div>
  )
}

/** Who prepared and who may finalize: finalizing above the threshold needs a second finance user. */
function FourEyes({ doc }: { doc: Invoice | Statement }) {
  const user = useAppSelector(selectUser)
  if (doc.status !== "draft") {
    return (
      <p className="hint">
        Prepared by {doc.prepared_by ?? "—"}
        {doc.approved_by && doc.approved_by !== doc.prepared_by ? `, finalized (second pair of eyes) by ${doc.approved_by}` : doc.finalized_by ? `, finalized by ${doc.finalized_by}` : ""}
        {doc.finalized_at ? ` on ${formatDateTime(doc.finalized_at)}` : ""}.
      </p>
    )
  }
  if (!doc.prepared_by) return <p className="hint">Four-eyes rule: above the threshold, the first finance user prepares and a second one finalizes.</p>
  const mine = user?.subject === doc.prepared_by
  return (
    <p className="notice" role="status">
      Prepared by <strong>{doc.prepared_by}</strong> {doc.prepared_at ? `on ${formatDateTime(doc.prepared_at)}` : ""}: a second finance
      user who is not the preparer must finalize it{mine ? " — that cannot be you." : "."}
    </p>
  )
}

function LineRow({ kind, docId, line, currency }: { kind: DocKind; docId: string; line: DocLine; currency: string }) {
  const [load, lineage] = useLazyLineLineageQuery()
  return (
    <>
      <tr className={line.kind === "adjustment" ? "adjustment" : ""}>
        <td>
          {line.description}
          {line.kind === "adjustment" && (
            <div className="muted">
              adjustment ({line.adjustment_kind}) correcting {line.corrects_period_key ?? "an earlier period"}
              {line.corrects_invoice_id && (
                <> · <Link to={`/invoices/${line.corrects_invoice_id}`}>corrected invoice</Link></>
              )}
            </div>
          )}
        </td>
        <td>{line.contract_id ? <Link to={`/contracts/${encodeURIComponent(line.contract_id)}`}>{line.contract_id}</Link> : "—"}</td>
        <td className="num">{line.quantity?.toLocaleString("en-US") ?? "—"}</td>
        <td className="num">{line.unit_price ? `${formatMoney(line.unit_price, currency)}${line.unit === "per_thousand" ? " / 1000" : ""}` : "—"}</td>
        <td className="num">{formatMoney(line.amount, currency)}</td>
        <td>
          <button type="button" className="link" onClick={() => void load({ kind, id: docId, lineId: line.id })}>
            Trace
          </button>
        </td>
      </tr>
      {(lineage.data ?? lineage.error ?? lineage.isFetching) && (
        <tr className="lineage">
          <td colSpan={6}>
            {lineage.isFetching && <Loading what="lineage" />}
            <ProblemAlert error={lineage.error} what="trace the line" />
            {lineage.data && (
              <span>
                {lineage.data.close ? `From closed period ${lineage.data.close.period_key} of ${lineage.data.close.contract_id} (closed ${formatDateTime(lineage.data.close.closed_at)})` : "No closed period"}
                {lineage.data.adjustments.length > 0 &&
                  ` · adjustments: ${lineage.data.adjustments.map((a) => `${a.kind} for ${a.corrects_period_key}`).join(", ")}`}
              </span>
            )}
          </td>
        </tr>
      )}
    </>
  )
}

function Lines({ kind, doc }: { kind: DocKind; doc: Invoice | Statement }) {
  return (
    <TableScroll label="Lines">
    <table className="table">
      <caption>Lines</caption>
      <thead>
        <tr>
          <th scope="col">Description</th>
          <th scope="col">Contract</th>
          <th scope="col" className="num">Quantity</th>
          <th scope="col" className="num">Unit price</th>
          <th scope="col" className="num">Amount</th>
          <th scope="col"><span className="sr-only">Lineage</span></th>
        </tr>
      </thead>
      <tbody>
        {doc.lines.map((l) => <LineRow key={l.id} kind={kind} docId={doc.id} line={l} currency={doc.currency} />)}
      </tbody>
    </table>
    </TableScroll>
  )
}

export function InvoiceDetail() {
  const { id = "" } = useParams()
  const user = useAppSelector(selectUser)
  const { data, error, isLoading, refetch } = useGetInvoiceQuery(id)
  const [act, actState] = useInvoiceActionMutation()
  const [voiding, setVoiding] = useState(false)
  const [reason, setReason] = useState("")
  usePageTitle(data ? `Invoice ${data.number ?? "(draft)"}` : "Invoice")
  if (isLoading) return <Loading what="invoice" />
  if (error) return <ProblemAlert error={error} what="load the invoice" onRetry={() => void refetch()} />
  if (!data) return null
  const finance = can.finance(user)
  const mineToPrepare = data.prepared_by !== null && data.prepared_by === user?.subject
  const onVoid = (e: FormEvent) => {
    e.preventDefault()
    void act({ id: data.id, action: "void", reason }).then((r) => { if ("data" in r) setVoiding(false) })
  }
  return (
    <section aria-labelledby="invoice-heading">
      <p><Link to="/invoices">← Invoices</Link></p>
      <div className="page-head">
        <h1 id="invoice-heading">Invoice {data.number ?? "(draft)"}</h1>
        <StatusBadge status={data.status} />
      </div>
      <dl className="facts">
        <dt>Advertiser</dt><dd>{data.advertiser_id}</dd>
        <dt>Period</dt><dd>{data.period_key}</dd>
        <dt>Total</dt><dd data-testid="invoice-total"><strong>{formatMoney(data.total, data.currency)}</strong></dd>
        <dt>Issued / due</dt><dd>{data.issue_date ?? "—"} / {data.due_date ?? "—"}</dd>
        {data.po_references.length > 0 && (<><dt>PO</dt><dd>{data.po_references.join(", ")}</dd></>)}
        {data.credit_note && (<><dt>Credit note</dt><dd>{data.credit_note.number}</dd></>)}
      </dl>
      <FourEyes doc={data} />
      {finance && (
        <div className="actions">
          <ProblemAlert error={actState.error} what="change the invoice" />
          {data.status === "draft" && (
            <button type="button" className="primary" disabled={actState.isLoading || mineToPrepare}
              title={mineToPrepare ? "You prepared it: a second finance user must finalize" : undefined}
              onClick={() => void act({ id: data.id, action: "finalize" })}>
              {data.prepared_by ? "Finalize (second approval)" : "Finalize"}
            </button>
          )}
          {data.status === "finalized" && (
            <button type="button" disabled={actState.isLoading} onClick={() => void act({ id: data.id, action: "send" })}>Mark as sent</button>
          )}
          {(data.status === "finalized" || data.status === "sent") && !voiding && (
            <button type="button" className="danger" onClick={() => setVoiding(true)}>Void…</button>
          )}
        </div>
      )}
      {actState.data?.awaiting && <p className="notice" role="status">{actState.data.awaiting}</p>}
      {voiding && (
        <form onSubmit={onVoid} aria-label="Void the invoice">
          <Field label="Reason for voiding" hint="Voiding issues a credit note for the full amount.">
            {(p) => <textarea {...p} required value={reason} onChange={(e) => setReason(e.target.value)} />}
          </Field>
          <div className="actions">
            <button type="submit" className="danger" disabled={reason.trim() === "" || actState.isLoading}>Void with credit note</button>
            <button type="button" onClick={() => setVoiding(false)}>Cancel</button>
          </div>
        </form>
      )}
      <Downloads kind="invoices" doc={data} />
      <Lines kind="invoices" doc={data} />
    </section>
  )
}

export function StatementDetail() {
  const { id = "" } = useParams()
  const user = useAppSelector(selectUser)
  const { data, error, isLoading, refetch } = useGetStatementQuery(id)
  const [act, actState] = useStatementActionMutation()
  usePageTitle(data ? `Payout statement ${data.number ?? "(draft)"}` : "Payout statement")
  if (isLoading) return <Loading what="payout statement" />
  if (error) return <ProblemAlert error={error} what="load the payout statement" onRetry={() => void refetch()} />
  if (!data) return null
  const mineToPrepare = data.prepared_by !== null && data.prepared_by === user?.subject
  return (
    <section aria-labelledby="statement-heading">
      <p><Link to="/statements">← Payout statements</Link></p>
      <div className="page-head">
        <h1 id="statement-heading">Payout statement {data.number ?? "(draft)"}</h1>
        <StatusBadge status={data.status} />
      </div>
      <dl className="facts">
        <dt>Partner</dt><dd>{data.partner_id}</dd>
        <dt>Period</dt><dd>{data.period_key}</dd>
        <dt>Lines total</dt><dd>{formatMoney(data.lines_total, data.currency)}</dd>
        <dt>Carried in</dt><dd>{formatMoney(data.carried_in, data.currency)}</dd>
        <dt>Payable</dt><dd><strong>{formatMoney(data.amount_payable, data.currency)}</strong></dd>
        <dt>Carried forward</dt><dd>{formatMoney(data.carried_out, data.currency)}</dd>
      </dl>
      <FourEyes doc={data} />
      {can.finance(user) && (
        <div className="actions">
          <ProblemAlert error={actState.error} what="change the statement" />
          {data.status === "draft" && (
            <button type="button" className="primary" disabled={actState.isLoading || mineToPrepare} onClick={() => void act({ id: data.id, action: "finalize" })}>
              {data.prepared_by ? "Finalize (second approval)" : "Finalize"}
            </button>
          )}
          {data.status === "finalized" && <button type="button" onClick={() => void act({ id: data.id, action: "send" })}>Mark as sent</button>}
        </div>
      )}
      <Downloads kind="statements" doc={data} />
      <Lines kind="statements" doc={data} />
    </section>
  )
}
