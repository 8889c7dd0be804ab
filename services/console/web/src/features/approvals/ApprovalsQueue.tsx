import { useState } from "react"
import { Link } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { Empty, Field, Loading, ProblemAlert, TableScroll, usePageTitle, When } from "../../components/ui"
import { formatMoney } from "../../lib/money"
import { useVersionActionMutation } from "../contracts/api"
import { ChangesFromPrevious } from "../contracts/DiffView"
import { describeMissing, whyNoDecision } from "../contracts/versionRules"
import { PartyName, usePartyNames, type PartyNames } from "../parties/names"
import { can, selectUser } from "../session/sessionSlice"
import { useApprovalsQueueQuery, type QueueItem } from "./api"

function QueueRow({ item, names }: { item: QueueItem; names: PartyNames }) {
  const user = useAppSelector(selectUser)
  const [act, { isLoading: acting, error: actError }] = useVersionActionMutation()
  const { contract, version: v } = item
  const link = `/contracts/${encodeURIComponent(contract.id)}`
  return (
    <tr data-testid={`approval-${contract.id}-${v.version}`}>
      <td>
        <Link to={link}>{contract.name}</Link> v{v.version} ({v.kind})
        <div className="muted">
          {contract.status.replace(/_/g, " ")} · <code>{contract.id}</code>
        </div>
        <details>
          <summary>Changes</summary>
          <ChangesFromPrevious contractId={contract.id} version={v.version} currency={contract.currency} zone={contract.time_zone} />
        </details>
      </td>
      <td><PartyName type="advertiser" id={contract.advertiser_id} names={names} /></td>
      <td className="num">{v.committed_value ? formatMoney(v.committed_value, contract.currency) : "—"}</td>
      <td>
        {v.submitted_by ?? v.authors.join(", ")} · <When at={v.submitted_at} zone={contract.time_zone} />
      </td>
      <td data-testid={`missing-${contract.id}-${v.version}`}>
        {describeMissing(v) || "—"}
        {v.approvals.length > 0 && (
          <div className="muted">approved by {v.approvals.map((a) => `${a.approver} (${a.role})`).join(", ")}</div>
        )}
      </td>
      <td>
        {item.can_decide ? (
          <>
            <button type="button" className="primary" disabled={acting}
              onClick={() => void act({ contractId: contract.id, version: v.version, action: "approve", etag: v.etag })}>
              Approve v{v.version}
              <span className="sr-only"> of {contract.name}</span>
            </button>{" "}
            <Link to={link}>Review or reject…</Link>
            <ProblemAlert error={actError} what="approve" />
          </>
        ) : (
          <span className="muted" title={item.why_not ?? undefined}>{whyNoDecision(user, { ...v, state: "submitted" })}</span>
        )}
      </td>
    </tr>
  )
}

export function ApprovalsQueue() {
  usePageTitle("Approvals")
  const user = useAppSelector(selectUser)
  const [mine, setMine] = useState(true)
  const [cursors, setCursors] = useState<(string | null)[]>([null])
  const allowed = can.approve(user)
  const queue = useApprovalsQueueQuery({ mine, cursor: cursors.at(-1) ?? null }, { skip: !allowed, refetchOnMountOrArgChange: true })
  const names = usePartyNames(queue.data?.items.map((item) => item.contract.advertiser_id) ?? [])
  if (!allowed)
    return (
      <section aria-labelledby="approvals-heading">
        <h1 id="approvals-heading">Approvals</h1>
        <p className="notice">The approvals queue is for approvers and finance.</p>
      </section>
    )
  const items = queue.data?.items ?? []
  const next = queue.data?.next_cursor
  return (
    <section aria-labelledby="approvals-heading">
      <h1 id="approvals-heading">Approvals</h1>
      <p className="hint">
        Submitted versions of contracts in every state. Versions you authored, submitted or already approved are never
        yours to approve; each row says which approvals are still missing.
      </p>
      <form className="filters" onSubmit={(e) => e.preventDefault()}>
        <Field label="Show">
          {(p) => (
            <select {...p} value={mine ? "mine" : "all"} onChange={(e) => { setMine(e.target.value === "mine"); setCursors([null]) }}>
              <option value="mine">waiting for my roles</option>
              <option value="all">every submitted version</option>
            </select>
          )}
        </Field>
      </form>
      {queue.isLoading && <Loading what="the approvals queue" />}
      <ProblemAlert error={queue.error} what="load the approvals queue" onRetry={() => void queue.refetch()} />
      {queue.data && items.length === 0 && (
        <Empty>{mine ? "Nothing waits for your roles on this page." : "Nothing waits for approval on this page."}</Empty>
      )}
      {items.length > 0 && (
        <TableScroll label="Approvals queue">
          <table className="table" aria-busy={queue.isFetching}>
            <thead>
              <tr>
                <th scope="col">Version</th>
                <th scope="col">Advertiser</th>
                <th scope="col" className="num">Committed value</th>
                <th scope="col">Submitted</th>
                <th scope="col">Still missing</th>
                <th scope="col">Decision</th>
              </tr>
            </thead>
            <tbody>
              {items.map((item) => (
                <QueueRow key={`${item.contract.id}/${item.version.version}`} item={item} names={names} />
              ))}
            </tbody>
          </table>
        </TableScroll>
      )}
      {(cursors.length > 1 || next) && (
        <nav className="pager" aria-label="Pages">
          <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
            ← Previous
          </button>
          <span>Page {cursors.length}</span>
          <button type="button" disabled={!next} onClick={() => next && setCursors([...cursors, next])}>
            Next →
          </button>
        </nav>
      )}
    </section>
  )
}
