import { useState, type FormEvent } from "react"
import { Link, useParams } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { Field, Loading, ProblemAlert, StatusBadge, usePageTitle, When } from "../../components/ui"
import { formatMoney } from "../../lib/money"
import { fieldErrors, toProblem } from "../../lib/problems"
import { can, selectUser } from "../session/sessionSlice"
import { PacingPanel } from "../pacing/PacingPanel"
import { PartyName, usePartyNames } from "../parties/names"
import {
  useAmendContractMutation,
  useAuditTrailQuery,
  useEditVersionMutation,
  useGetContractQuery,
  useListVersionsQuery,
  useRenewContractMutation,
  useTerminateContractMutation,
  useVersionActionMutation,
} from "./api"
import { DiffView } from "./DiffView"
import { ErrorSummary } from "./ErrorSummary"
import { TermsEditor } from "./TermsEditor"
import { TermsView } from "./TermsView"
import type { Contract, ContractTerms, ContractVersion } from "./types"
import { canDecide, canEdit, describeMissing, isOwnVersion, shownState, whyNoDecision } from "./versionRules"

/** After an action the focus moves to what changed (the version's heading), once React has rendered it. */
const focusVersionHeading = () =>
  setTimeout(() => document.getElementById("version-heading")?.focus(), 0)

function DecisionPanel({ v }: { v: ContractVersion }) {
  const user = useAppSelector(selectUser)
  const [act, { isLoading, error }] = useVersionActionMutation()
  const [comment, setComment] = useState("")
  const [rejecting, setRejecting] = useState(false)
  const problem = toProblem(error)
  if (!canDecide(user, v)) {
    if (v.state === "submitted" && can.approve(user) && !isOwnVersion(user, v)) return <p className="notice">{whyNoDecision(user, v)}</p>
    return null
  }
  const onReject = (e: FormEvent) => {
    e.preventDefault()
    void act({ contractId: v.contract_id, version: v.version, action: "reject", comment }).then((r) => { if ("data" in r) focusVersionHeading() })
  }
  return (
    <div className="decision">
      <ProblemAlert problem={problem} what="record the decision" />
      {!rejecting ? (
        <div className="actions">
          <button type="button" className="primary" disabled={isLoading}
            onClick={() => void act({ contractId: v.contract_id, version: v.version, action: "approve", etag: v.etag }).then((r) => { if ("data" in r) focusVersionHeading() })}>
            Approve v{v.version}
          </button>
          <button type="button" onClick={() => setRejecting(true)}>
            Reject v{v.version}…
          </button>
        </div>
      ) : (
        <form onSubmit={onReject}>
          <Field label="Why is it rejected?" error={fieldErrors(problem).comment} hint="The author sees this comment.">
            {(p) => <textarea {...p} required value={comment} onChange={(e) => setComment(e.target.value)} />}
          </Field>
          <div className="actions">
            <button type="submit" className="danger" disabled={isLoading || comment.trim() === ""}>
              Reject with comment
            </button>
            <button type="button" onClick={() => setRejecting(false)}>
              Cancel
            </button>
          </div>
        </form>
      )}
    </div>
  )
}

function AuthorPanel({ v, onEdit }: { v: ContractVersion; onEdit: () => void }) {
  const user = useAppSelector(selectUser)
  const [act, { isLoading, error }] = useVersionActionMutation()
  if (!can.draftContracts(user)) return null
  return (
    <div className="actions">
      <ProblemAlert error={error} what="change the version" />
      {canEdit(user, v) && (
        <>
          <button type="button" onClick={onEdit}>
            Edit v{v.version}
          </button>
          <button type="button" className="primary" disabled={isLoading}
            onClick={() => void act({ contractId: v.contract_id, version: v.version, action: "submit", etag: v.etag }).then((r) => { if ("data" in r) focusVersionHeading() })}>
            Submit v{v.version} for approval
          </button>
        </>
      )}
      {v.state === "submitted" && (
        <button type="button" disabled={isLoading} onClick={() => void act({ contractId: v.contract_id, version: v.version, action: "withdraw" }).then((r) => { if ("data" in r) focusVersionHeading() })}>
          Withdraw v{v.version}
        </button>
      )}
    </div>
  )
}

function EditVersion({ v, onDone }: { v: ContractVersion; onDone: () => void }) {
  const [terms, setTerms] = useState<ContractTerms>(v.terms)
  const [edit, { isLoading, error }] = useEditVersionMutation()
  const problem = toProblem(error)
  const onSubmit = async (e: FormEvent) => {
    e.preventDefault()
    const r = await edit({ contractId: v.contract_id, version: v.version, etag: v.etag, terms })
    if ("data" in r) {
      onDone()
      focusVersionHeading()
    }
  }
  return (
    <form onSubmit={(e) => void onSubmit(e)} noValidate aria-label={`Edit version ${v.version}`}>
      <ErrorSummary problem={problem} />
      <TermsEditor terms={terms} onChange={setTerms} errors={fieldErrors(problem)} lockAdvertiser lockCurrencyAndZone={v.version > 1} />
      <div className="actions">
        <button type="submit" className="primary" disabled={isLoading}>
          Save v{v.version}
        </button>
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  )
}

function ContractActions({ contract, latest }: { contract: Contract; latest: ContractVersion | undefined }) {
  const user = useAppSelector(selectUser)
  const [mode, setMode] = useState<"none" | "amend" | "renew" | "terminate">("none")
  const [terms, setTerms] = useState<ContractTerms | null>(null)
  const [effective, setEffective] = useState("")
  const [reason, setReason] = useState("")
  const [escalate, setEscalate] = useState(true)
  const [amend, amendState] = useAmendContractMutation()
  const [renew, renewState] = useRenewContractMutation()
  const [terminate, terminateState] = useTerminateContractMutation()
  const hasApproved = contract.versions.some((v) => v.state === "approved")
  if (!can.draftContracts(user) || !hasApproved || contract.status === "ended") return null
  const amendProblem = toProblem(amendState.error)
  const terminateProblem = toProblem(terminateState.error)
  const close = () => setMode("none")

  return (
    <section className="card" aria-labelledby="lifecycle-heading">
      <h2 id="lifecycle-heading">Lifecycle</h2>
      <div className="actions">
        <button type="button" onClick={() => { setTerms(latest?.terms ?? null); setMode("amend") }}>Amend…</button>
        <button type="button" onClick={() => setMode("renew")}>Renew…</button>
        <button type="button" className="danger" onClick={() => setMode("terminate")}>Terminate…</button>
      </div>
      {mode === "amend" && terms && (
        <form noValidate aria-label="Amendment" onSubmit={(e) => {
          e.preventDefault()
          void amend({ contractId: contract.id, terms, effective_from: effective }).then((r) => { if ("data" in r) { close(); focusVersionHeading() } })
        }}>
          <ErrorSummary problem={amendProblem} />
          <Field label="Effective from" required error={fieldErrors(amendProblem).effective_from}
            hint={`A date in the contract's time zone (${contract.time_zone}), on or after the start of the open billing period.`}>
            {(p) => <input {...p} data-field="effective_from" type="date" value={effective} onChange={(e) => setEffective(e.target.value)} />}
          </Field>
          <TermsEditor terms={terms} onChange={setTerms} errors={fieldErrors(amendProblem)} lockAdvertiser lockCurrencyAndZone />
          <div className="actions">
            <button type="submit" className="primary" disabled={amendState.isLoading}>Draft amendment</button>
            <button type="button" onClick={close}>Cancel</button>
          </div>
        </form>
      )}
      {mode === "renew" && (
        <form aria-label="Renewal" onSubmit={(e) => {
          e.preventDefault()
          void renew({ contractId: contract.id, apply_escalator: escalate }).then((r) => { if ("data" in r) { close(); focusVersionHeading() } })
        }}>
          <ProblemAlert error={renewState.error} what="renew" />
          <div className="field checkbox">
            <input id="escalate" type="checkbox" checked={escalate} onChange={(e) => setEscalate(e.target.checked)} />
            <label htmlFor="escalate">Apply the contract's escalator to every rate</label>
          </div>
          <div className="actions">
            <button type="submit" className="primary" disabled={renewState.isLoading}>Draft renewal</button>
            <button type="button" onClick={close}>Cancel</button>
          </div>
        </form>
      )}
      {mode === "terminate" && (
        <form noValidate aria-label="Termination" onSubmit={(e) => {
          e.preventDefault()
          void terminate({ contractId: contract.id, effective_date: effective, reason }).then((r) => { if ("data" in r) { close(); focusVersionHeading() } })
        }}>
          <ErrorSummary problem={terminateProblem} />
          <Field label="Termination date" required error={fieldErrors(terminateProblem).effective_date} hint="The notice period applies.">
            {(p) => <input {...p} data-field="effective_date" type="date" value={effective} onChange={(e) => setEffective(e.target.value)} />}
          </Field>
          <Field label="Reason" required error={fieldErrors(terminateProblem).reason}>
            {(p) => <textarea {...p} data-field="reason" value={reason} onChange={(e) => setReason(e.target.value)} />}
          </Field>
          <div className="actions">
            <button type="submit" className="danger" disabled={terminateState.isLoading}>Request termination</button>
            <button type="button" onClick={close}>Cancel</button>
          </div>
        </form>
      )}
    </section>
  )
}

function AuditTrail({ contractId, zone }: { contractId: string; zone: string }) {
  const { data, error, isLoading } = useAuditTrailQuery(contractId)
  if (isLoading) return <Loading what="audit trail" />
  if (error) return <ProblemAlert error={error} what="load the audit trail" />
  return (
    <ol className="audit">
      {(data ?? []).map((e) => (
        <li key={e.seq}>
          <When at={e.at} zone={zone} /> <strong>{e.action}</strong> by {e.actor}{" "}
          <code title={`hash ${e.hash}`}>#{e.seq}</code>
        </li>
      ))}
    </ol>
  )
}

export function ContractDetail() {
  const { contractId = "" } = useParams()
  const user = useAppSelector(selectUser)
  const contract = useGetContractQuery(contractId)
  const versions = useListVersionsQuery(contractId)
  const names = usePartyNames([contract.data?.advertiser_id, ...(contract.data?.partner_ids ?? [])])
  const [selected, setSelected] = useState<number | null>(null)
  const [editing, setEditing] = useState(false)
  usePageTitle(contract.data?.name ?? "Contract")

  if (contract.isLoading || versions.isLoading) return <Loading what="contract" />
  if (contract.error) return <ProblemAlert error={contract.error} what="load the contract" onRetry={() => void contract.refetch()} />
  if (!contract.data) return null
  const c = contract.data
  const list = versions.data ?? []
  const shown = list.find((v) => v.version === selected) ?? list.at(-1)
  const latestApproved = [...list].reverse().find((v) => v.state === "approved")

  return (
    <section aria-labelledby="contract-heading">
      <p>
        <Link to="/contracts">← Contracts</Link>
      </p>
      <div className="page-head">
        <h1 id="contract-heading">{c.name}</h1>
        <StatusBadge status={c.status} />
      </div>
      <dl className="facts">
        <dt>Contract</dt>
        <dd><code>{c.id}</code></dd>
        <dt>Advertiser</dt>
        <dd><PartyName type="advertiser" id={c.advertiser_id} names={names} /></dd>
        {c.partner_ids.length > 0 && (
          <>
            <dt>Partners</dt>
            <dd>
              {c.partner_ids.map((id, i) => (
                <span key={id}>{i > 0 && ", "}<PartyName type="partner" id={id} names={names} /></span>
              ))}
            </dd>
          </>
        )}
        <dt>Type</dt>
        <dd>{c.contract_type.toUpperCase()} · {c.currency} · {c.time_zone}</dd>
        <dt>Times</dt>
        <dd>shown in the contract's time zone, {c.time_zone}; hover one for yours</dd>
        <dt>Current version</dt>
        <dd>{c.current_version ? `v${c.current_version}` : "none in force"}</dd>
      </dl>
      <ProblemAlert error={versions.error} what="load the versions" />
      <div className="columns">
        <div>
          <h2>Versions</h2>
          <ol className="timeline" aria-label="Versions timeline">
            {list.map((v) => (
              <li key={v.version} className={v.version === shown?.version ? "current" : ""}>
                <button type="button" className="link" aria-pressed={v.version === shown?.version} onClick={() => { setSelected(v.version); setEditing(false) }}>
                  v{v.version} · {v.kind}
                </button>{" "}
                <StatusBadge status={shownState(v, list)} />
                <div className="muted">
                  effective <When at={v.effective_from} zone={c.time_zone} /> · by {v.authors.join(", ")}
                  {v.committed_value ? ` · committed ${formatMoney(v.committed_value, c.currency)}` : ""}
                </div>
                {v.decision_comment && <div className="comment">“{v.decision_comment}” — {v.decided_by}</div>}
              </li>
            ))}
          </ol>
          <ContractActions contract={c} latest={latestApproved} />
        </div>
        {shown && (
          <div>
            <div className="page-head">
              <h2 id="version-heading" tabIndex={-1}>
                Version {shown.version} <StatusBadge status={shownState(shown, list)} />
              </h2>
            </div>
            {shown.state === "submitted" && (
              <p className="hint">
                Approvals: {shown.approvals.map((a) => `${a.approver} (${a.role})`).join(", ") || "none yet"}
                {describeMissing(shown) && ` · still needed: ${describeMissing(shown)}`}
              </p>
            )}
            {shown.state === "submitted" && isOwnVersion(user, shown) && can.approve(user) && (
              <p className="notice">You authored or submitted this version: another approver must decide (maker-checker).</p>
            )}
            <DecisionPanel v={shown} />
            {editing ? (
              <EditVersion v={shown} onDone={() => setEditing(false)} />
            ) : (
              <>
                <AuthorPanel v={shown} onEdit={() => setEditing(true)} />
                <TermsView terms={shown.terms} />
              </>
            )}
          </div>
        )}
      </div>
      {can.seeSpend(user) && <PacingPanel contractId={c.id} />}
      <section aria-labelledby="diff-heading">
        <h2 id="diff-heading">Compare versions</h2>
        <DiffView contractId={c.id} versions={list} currency={c.currency} zone={c.time_zone} />
      </section>
      {!can.isTenant(user) && (
        <section aria-labelledby="audit-heading">
          <h2 id="audit-heading">Audit trail</h2>
          <AuditTrail contractId={c.id} zone={c.time_zone} />
        </section>
      )}
    </section>
  )
}
