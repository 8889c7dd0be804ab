import { useState, type FormEvent } from "react"
import { useNavigate } from "react-router"
import { useAppSelector } from "../../app/hooks"
import { Field, RequiredNote, usePageTitle } from "../../components/ui"
import { fieldErrors, toProblem } from "../../lib/problems"
import { can, selectUser } from "../session/sessionSlice"
import { useDraftContractMutation, useListContractsQuery } from "./api"
import { ErrorSummary } from "./ErrorSummary"
import { cpaTemplate, cpmTemplate } from "./templates"
import { TermsEditor } from "./TermsEditor"
import type { ContractTerms } from "./types"

export function NewContract() {
  const user = useAppSelector(selectUser)
  const navigate = useNavigate()
  const [name, setName] = useState("")
  const [terms, setTerms] = useState<ContractTerms>(() => cpmTemplate())
  const [draft, { isLoading, error }] = useDraftContractMutation()
  const problem = toProblem(error)
  const errors = fieldErrors(problem)
  usePageTitle("New contract")
  // the advertisers the viewer already has contracts with, suggested as they type (no advertiser directory API yet)
  const known = useListContractsQuery({ limit: 100 }, { skip: !can.draftContracts(user) })
  const advertisers = [...new Set((known.data?.items ?? []).map((c) => c.advertiser_id))].sort()

  if (!can.draftContracts(user)) return <p role="alert">Only operations users draft contracts.</p>

  const onSubmit = async (e: FormEvent) => {
    e.preventDefault()
    const result = await draft({ name, terms })
    if ("data" in result && result.data) void navigate(`/contracts/${encodeURIComponent(result.data.id)}`)
  }

  const switchType = (type: "cpm" | "cpa") => {
    const next = type === "cpm" ? cpmTemplate(terms.common.advertiser_id) : cpaTemplate(terms.common.advertiser_id)
    setTerms({ ...next, common: terms.common })
  }

  return (
    <section aria-labelledby="new-heading">
      <h1 id="new-heading">New contract</h1>
      <form onSubmit={(e) => void onSubmit(e)} noValidate>
        <RequiredNote />
        <ErrorSummary problem={problem} />
        <div className="grid">
          <Field label="Contract name" error={errors.name} required>
            {(p) => <input {...p} data-field="name" value={name} onChange={(e) => setName(e.target.value)} />}
          </Field>
          <Field label="Pricing model" error={errors.contract_type} required>
            {(p) => (
              <select {...p} data-field="contract_type" value={terms.contract_type} onChange={(e) => switchType(e.target.value as "cpm" | "cpa")}>
                <option value="cpm">CPM (per thousand impressions)</option>
                <option value="cpa">CPA (per conversion)</option>
              </select>
            )}
          </Field>
        </div>
        <TermsEditor terms={terms} onChange={setTerms} errors={errors} advertiserOptions={advertisers} />
        <div className="actions">
          <button type="submit" className="primary" disabled={isLoading}>
            {isLoading ? "Saving…" : "Save draft"}
          </button>
        </div>
      </form>
    </section>
  )
}
