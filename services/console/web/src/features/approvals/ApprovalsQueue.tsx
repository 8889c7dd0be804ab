import { Link } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { Empty, Loading, ProblemAlert } from "../../components/ui"
import { formatDateTime, formatMoney } from "../../lib/money"
import { useListContractsQuery, useListVersionsQuery, useVersionActionMutation } from "../contracts/api"
import type { Contract } from "../contracts/types"
import { canDecide, isOwnVersion } from "../contracts/versionRules"
import { can, selectUser } from "../session/sessionSlice"

/** The submitted versions of one contract that the viewer may decide on (never their own). */
function PendingVersions({ contract }: { contract: Contract }) {
  const user = useAppSelector(selectUser)
  const { data, error, isLoading } = useListVersionsQuery(contract.id)
  const [act, { isLoading: acting, error: actError }] = useVersionActionMutation()
  if (isLoading) return <tr><td colSpan={5}><Loading what={`versions of ${contract.name}`} /></td></tr>
  if (error) return <tr><td colSpan={5}><ProblemAlert error={error} what={`load ${contract.name}`} /></td></tr>
  const submitted = (data ?? []).filter((v) => v.state === "submitted")
  return (
    <>
      {submitted.map((v) => (
        <tr key={v.version} data-testid={`approval-${contract.id}-${v.version}`}>
          <td>
            <Link to={`/contracts/${encodeURIComponent(contract.id)}`}>{contract.name}</Link> v{v.version} ({v.kind})
          </td>
          <td>{contract.advertiser_id}</td>
          <td>{v.committed_value ? formatMoney(v.committed_value, contract.currency) : "—"}</td>
          <td>
            {v.submitted_by ?? v.authors.join(", ")} · {formatDateTime(v.submitted_at)}
          </td>
          <td>
            {canDecide(user, v) ? (
              <>
                <button type="button" className="primary" disabled={acting}
                  onClick={() => void act({ contractId: contract.id, version: v.version, action: "approve", etag: v.etag })}>
                  Approve
                </button>{" "}
                <Link to={`/contracts/${encodeURIComponent(contract.id)}`}>Review or reject…</Link>
                <ProblemAlert error={actError} what="approve" />
              </>
            ) : isOwnVersion(user, v) ? (
              <span className="muted">yours — another approver decides</span>
            ) : (
              <span className="muted">your roles cannot approve</span>
            )}
          </td>
        </tr>
      ))}
    </>
  )
}

export function ApprovalsQueue() {
  const user = useAppSelector(selectUser)
  // termination requests keep the contract active, so active contracts are scanned too
  const pending = useListContractsQuery({ status: "pending_approval", limit: 100 })
  const active = useListContractsQuery({ status: "active", limit: 100 })
  if (!can.approve(user)) return <p role="alert">The approvals queue is for approvers and finance.</p>
  const contracts = [...(pending.data?.items ?? []), ...(active.data?.items ?? [])].filter((c) =>
    c.versions.some((v) => v.state === "submitted"),
  )
  return (
    <section aria-labelledby="approvals-heading">
      <h1 id="approvals-heading">Approvals</h1>
      <p className="hint">Versions waiting for a decision. Versions you authored or submitted are never yours to approve.</p>
      {(pending.isLoading || active.isLoading) && <Loading what="the approvals queue" />}
      <ProblemAlert error={pending.error ?? active.error} what="load the approvals queue" />
      {pending.data && contracts.length === 0 && <Empty>Nothing waits for approval.</Empty>}
      {contracts.length > 0 && (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Advertiser</th>
              <th scope="col">Committed value</th>
              <th scope="col">Submitted</th>
              <th scope="col">Decision</th>
            </tr>
          </thead>
          <tbody>
            {contracts.map((c) => (
              <PendingVersions key={c.id} contract={c} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}
