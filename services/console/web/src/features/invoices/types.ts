/** Shapes of the invoicing service's JSON (services/invoicing/tally_invoicing/api.py). */
export type DocStatus = "draft" | "finalized" | "sent" | "paid" | "void"

export interface DocLine {
  id: string
  kind: string
  adjustment_kind?: string | null
  description: string
  contract_id: string | null
  contract_version: number | null
  event_type?: string | null
  quantity: number | null
  unit: string | null
  unit_price: string | null
  amount: string
  close_id?: string | null
  corrects_period_key?: string | null
  corrects_invoice_id?: string | null
  corrects_line_id?: string | null
  partner_id?: string | null
}

interface DocBase {
  id: string
  currency: string
  period_key: string
  status: DocStatus
  number: string | null
  prepared_by: string | null
  prepared_at: string | null
  finalized_by: string | null
  approved_by: string | null
  finalized_at: string | null
  sent_at: string | null
  created_at: string
  lines: DocLine[]
  awaiting?: string
}

export interface Invoice extends DocBase {
  advertiser_id: string
  total: string
  issue_date: string | null
  due_date: string | null
  po_references: string[]
  voided_by: string | null
  credit_note: { id: string; number: string } | null
}

export interface Statement extends DocBase {
  partner_id: string
  lines_total: string
  carried_in: string | null
  balance: string | null
  amount_payable: string | null
  carried_out: string | null
  minimum_payout: string | null
}

export type ListItem = Omit<Invoice, "lines"> | Omit<Statement, "lines">

export interface Lineage {
  line_id: string
  close: { close_id: string; contract_id: string; period_key: string; closed_at: string } | null
  adjustments: { adjustment_id: string; kind: string; corrects_period_key: string; amount_exact: string }[]
  corrects_line_id: string | null
  corrects_period_key: string | null
}
