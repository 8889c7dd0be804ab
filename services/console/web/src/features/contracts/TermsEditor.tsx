import type { ReactNode } from "react"
import { Field } from "../../components/ui"
import { currencyChoices, timeZoneChoices, withValue } from "../../lib/choices"
import { minorUnits } from "../../lib/money"
import { flat, setAt } from "./templates"
import type { ContractTerms, Price } from "./types"

type Errors = Record<string, string>

interface Props {
  terms: ContractTerms
  onChange: (t: ContractTerms) => void
  errors: Errors
  /** the advertiser is fixed once the contract exists */
  lockAdvertiser?: boolean
  /** an amendment cannot change the currency or the time zone (the API refuses it): shown read-only */
  lockCurrencyAndZone?: boolean
  /** advertisers to suggest (ids the viewer already has contracts with) */
  advertiserOptions?: string[]
}

const nullable = (v: string): string | null => (v.trim() === "" ? null : v.trim())
const int = (v: string): number => (v.trim() === "" ? 0 : Math.trunc(Number(v)))

function TextInput({ label, path, value, errors, onValue, hint, type = "text", disabled, readOnly, required, list }: {
  label: string
  path: string
  value: string | number | null | undefined
  errors: Errors
  onValue: (v: string) => void
  hint?: string
  type?: "text" | "date" | "number"
  disabled?: boolean
  readOnly?: boolean
  required?: boolean
  list?: string
}) {
  return (
    <Field label={label} error={errors[path]} hint={hint} required={required && !readOnly && !disabled}>
      {(p) => (
        <input
          {...p}
          name={path}
          data-field={path}
          type={type}
          inputMode={type === "number" ? "numeric" : undefined}
          value={value ?? ""}
          disabled={disabled}
          readOnly={readOnly}
          list={list}
          onChange={(e) => onValue(e.target.value)}
        />
      )}
    </Field>
  )
}

function Select<T extends string>({ label, path, value, options, errors, onValue, labels, required, hint }: {
  label: string
  path: string
  value: T
  options: readonly T[]
  errors: Errors
  onValue: (v: T) => void
  labels?: (o: T) => string
  required?: boolean
  hint?: string
}) {
  return (
    <Field label={label} error={errors[path]} required={required} hint={hint}>
      {(p) => (
        <select {...p} name={path} data-field={path} value={value} onChange={(e) => onValue(e.target.value as T)}>
          {options.map((o) => (
            <option key={o} value={o}>
              {labels ? labels(o) : o.replace(/_/g, " ")}
            </option>
          ))}
        </select>
      )}
    </Field>
  )
}

function PriceInput({ label, path, price, errors, set, currency }: {
  label: string
  path: string
  price: Price
  errors: Errors
  set: (path: string, v: unknown) => void
  currency: string
}) {
  return (
    <fieldset className="price">
      <legend>{label}</legend>
      <Select label="Kind" path={`${path}.kind`} value={price.kind} options={["flat", "percent"] as const} errors={errors}
        onValue={(k) => set(path, k === "flat" ? flat("0") : { kind: "percent", percent: "0" })} />
      {price.kind === "flat" ? (
        <TextInput label={`Amount (${currency})`} path={`${path}.amount`} value={price.amount} errors={errors} required
          hint={`decimal, up to ${minorUnits(currency)} decimals`} onValue={(v) => set(`${path}.amount`, v)} />
      ) : (
        <TextInput label="Percent of order value" path={`${path}.percent`} value={price.percent} errors={errors} required
          onValue={(v) => set(`${path}.percent`, v)} />
      )}
    </fieldset>
  )
}

function Section({ title, children }: { title: string; children: ReactNode }) {
  return (
    <fieldset className="section">
      <legend>{title}</legend>
      <div className="grid">{children}</div>
    </fieldset>
  )
}

/** The CPM / CPA terms form. Errors are keyed by the API's field path, so each shows at its field. */
export function TermsEditor({ terms, onChange, errors, lockAdvertiser, lockCurrencyAndZone, advertiserOptions = [] }: Props) {
  const set = (path: string, v: unknown) => onChange(setAt(terms, path, v))
  const c = terms.common
  const currencies = withValue(currencyChoices(), c.currency, (code) => ({ code, label: code }), (x) => x.code)
  const zones = withValue(timeZoneChoices(), c.time_zone, (z) => z, (z) => z)
  const currencyLabel = new Map(currencies.map((x) => [x.code, x.label]))
  return (
    <div className="terms-editor">
      <Section title="Common terms">
        <TextInput label="Advertiser id" path="common.advertiser_id" value={c.advertiser_id} errors={errors} required
          disabled={lockAdvertiser} list={advertiserOptions.length ? "known-advertisers" : undefined}
          hint={lockAdvertiser ? "fixed once the contract exists" : undefined} onValue={(v) => set("common.advertiser_id", v.trim())} />
        {advertiserOptions.length > 0 && (
          <datalist id="known-advertisers">
            {advertiserOptions.map((a) => <option key={a} value={a} />)}
          </datalist>
        )}
        {lockCurrencyAndZone ? (
          <>
            <TextInput label="Currency (ISO 4217)" path="common.currency" value={currencyLabel.get(c.currency) ?? c.currency}
              errors={errors} readOnly hint="an amendment keeps the contract's currency" onValue={() => undefined} />
            <TextInput label="Time zone (IANA)" path="common.time_zone" value={c.time_zone} errors={errors} readOnly
              hint="an amendment keeps the contract's time zone" onValue={() => undefined} />
          </>
        ) : (
          <>
            <Select label="Currency (ISO 4217)" path="common.currency" value={c.currency} options={currencies.map((x) => x.code)}
              labels={(code) => currencyLabel.get(code) ?? code} errors={errors} required onValue={(v) => set("common.currency", v)} />
            <Select label="Time zone (IANA)" path="common.time_zone" value={c.time_zone} options={zones} labels={(z) => z}
              errors={errors} required hint="periods and flight dates are in this zone" onValue={(v) => set("common.time_zone", v)} />
          </>
        )}
        <Select label="Billing period" path="common.billing_period" value={c.billing_period} required
          options={["month", "week"] as const} errors={errors} onValue={(v) => set("common.billing_period", v)} />
        <TextInput label="Payment terms (net days)" path="common.payment_terms_days" type="number" value={c.payment_terms_days}
          errors={errors} required onValue={(v) => set("common.payment_terms_days", int(v))} />
        <TextInput label="Flight start" path="common.flight_start" type="date" value={c.flight_start} errors={errors} required
          onValue={(v) => set("common.flight_start", v)} />
        <TextInput label="Flight end" path="common.flight_end" type="date" value={c.flight_end} errors={errors}
          hint="empty = evergreen" onValue={(v) => set("common.flight_end", nullable(v))} />
        <TextInput label="Campaign ids" path="common.campaign_ids" value={c.campaign_ids.join(", ")} errors={errors} required
          hint="comma-separated" onValue={(v) => set("common.campaign_ids", v.split(",").map((s) => s.trim()).filter(Boolean))} />
        <TextInput label="Purchase order reference" path="common.po_reference" value={c.po_reference} errors={errors}
          onValue={(v) => set("common.po_reference", nullable(v))} />
        <TextInput label="Notice period (days)" path="common.notice_period_days" type="number" value={c.notice_period_days}
          errors={errors} onValue={(v) => set("common.notice_period_days", int(v))} />
        <div className="field checkbox">
          <input id="auto-renew" type="checkbox" checked={c.auto_renew} data-field="common.auto_renew"
            onChange={(e) => set("common.auto_renew", e.target.checked)} />
          <label htmlFor="auto-renew">Auto-renew (evergreen)</label>
        </div>
        {c.auto_renew && (
          <>
            <TextInput label="Renewal term (months)" path="common.renewal_term_months" type="number" value={c.renewal_term_months}
              errors={errors} onValue={(v) => set("common.renewal_term_months", v === "" ? null : int(v))} />
            <TextInput label="Escalator on renewal (%)" path="common.escalator_pct" value={c.escalator_pct} errors={errors}
              onValue={(v) => set("common.escalator_pct", nullable(v))} />
          </>
        )}
      </Section>

      {terms.contract_type === "cpm" && terms.cpm && (
        <Section title="CPM terms">
          <Select label="Rate card" path="cpm.rate_card.kind" value={terms.cpm.rate_card.kind}
            options={["flat", "graduated", "volume"] as const} errors={errors} onValue={(v) => set("cpm.rate_card.kind", v)} />
          <Select label="Tier basis" path="cpm.rate_card.tier_basis" value={terms.cpm.rate_card.tier_basis}
            options={["period", "lifetime"] as const} errors={errors} onValue={(v) => set("cpm.rate_card.tier_basis", v)} />
          <div className="wide">
            <table className="table compact">
              <caption>Rate bands {errors["cpm.rate_card.bands"] && <span className="field-error">{errors["cpm.rate_card.bands"]}</span>}</caption>
              <thead>
                <tr>
                  <th scope="col">From impressions</th>
                  <th scope="col">Rate per thousand ({c.currency})</th>
                  <th scope="col"><span className="sr-only">Remove</span></th>
                </tr>
              </thead>
              <tbody>
                {terms.cpm.rate_card.bands.map((b, i) => (
                  <tr key={i}>
                    <td>
                      <TextInput label={`Band ${i + 1} from impressions`} path={`cpm.rate_card.bands.${i}.from_impressions`} type="number" required
                        value={b.from_impressions} errors={errors} onValue={(v) => set(`cpm.rate_card.bands.${i}.from_impressions`, int(v))} />
                    </td>
                    <td>
                      <TextInput label={`Band ${i + 1} CPM rate`} path={`cpm.rate_card.bands.${i}.rate_cpm`} value={b.rate_cpm} required
                        errors={errors} onValue={(v) => set(`cpm.rate_card.bands.${i}.rate_cpm`, v)} />
                    </td>
                    <td>
                      {i > 0 && terms.cpm && (
                        <button type="button" onClick={() => set("cpm.rate_card.bands", terms.cpm?.rate_card.bands.filter((_, j) => j !== i))}>
                          Remove band {i + 1}
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            <button type="button" onClick={() => set("cpm.rate_card.bands", [...(terms.cpm?.rate_card.bands ?? []), { from_impressions: 0, rate_cpm: "" }])}>
              Add band
            </button>
          </div>
          <TextInput label={`Total budget cap (${c.currency})`} path="cpm.budget_caps.total" value={terms.cpm.budget_caps?.total}
            errors={errors} hint="empty = no cap" onValue={(v) => set("cpm.budget_caps", { ...(terms.cpm?.budget_caps ?? { total: null, per_period: null }), total: nullable(v) })} />
          <TextInput label={`Budget cap per period (${c.currency})`} path="cpm.budget_caps.per_period" value={terms.cpm.budget_caps?.per_period}
            errors={errors} hint="empty = no cap" onValue={(v) => set("cpm.budget_caps", { ...(terms.cpm?.budget_caps ?? { total: null, per_period: null }), per_period: nullable(v) })} />
          <TextInput label={`Minimum commitment per period (${c.currency})`} path="cpm.minimum_commitment_per_period"
            value={terms.cpm.minimum_commitment_per_period} errors={errors} hint="empty = none"
            onValue={(v) => set("cpm.minimum_commitment_per_period", nullable(v))} />
        </Section>
      )}

      {terms.contract_type === "cpa" && terms.cpa && (
        <Section title="CPA terms">
          {terms.cpa.payouts.map((row, i) => (
            <fieldset key={i} className="wide payout">
              <legend>Payout for event type {i + 1}</legend>
              <TextInput label="Event type" path={`cpa.payouts.${i}.event_type`} value={row.event_type} errors={errors} required
                onValue={(v) => set(`cpa.payouts.${i}.event_type`, v)} />
              <PriceInput label="Advertiser price" path={`cpa.payouts.${i}.advertiser_price`} price={row.advertiser_price}
                errors={errors} set={set} currency={c.currency} />
              <PriceInput label="Partner payout" path={`cpa.payouts.${i}.partner_payout`} price={row.partner_payout}
                errors={errors} set={set} currency={c.currency} />
              {i > 0 && (
                <button type="button" onClick={() => set("cpa.payouts", terms.cpa?.payouts.filter((_, j) => j !== i))}>
                  Remove event type {i + 1}
                </button>
              )}
            </fieldset>
          ))}
          <div className="wide">
            <button type="button" onClick={() => set("cpa.payouts", [...(terms.cpa?.payouts ?? []), { event_type: "", advertiser_price: flat(""), partner_payout: flat(""), tiers: [] }])}>
              Add event type
            </button>
          </div>
          <TextInput label="Lookback window (days)" path="cpa.attribution.lookback_days" type="number"
            value={terms.cpa.attribution?.lookback_days} errors={errors}
            onValue={(v) => set("cpa.attribution", { ...(terms.cpa?.attribution ?? {}), lookback_days: int(v) })} />
          <Select label="Attribution model" path="cpa.attribution.model"
            value={terms.cpa.attribution?.model ?? "last_touch"}
            options={["last_touch", "first_touch"] as const} errors={errors}
            onValue={(v) => set("cpa.attribution", { ...(terms.cpa?.attribution ?? {}), model: v })} />
        </Section>
      )}
    </div>
  )
}
