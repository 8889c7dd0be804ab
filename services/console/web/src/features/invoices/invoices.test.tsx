import { describe, expect, it } from "vitest"
import { screen, waitFor } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { InvoiceDetail } from "./DocumentDetail"
import type { Invoice } from "./types"

const invoice = (over: Partial<Invoice> = {}): Invoice => ({
  id: "6f1c0c3e-0000-4000-8000-000000000001", advertiser_id: "adv-acme", currency: "JPY", period_key: "2026-10",
  status: "draft", number: null, total: "150000", issue_date: null, due_date: null, po_references: [], voided_by: null,
  credit_note: null, prepared_by: null, prepared_at: null, finalized_by: null, approved_by: null, finalized_at: null,
  sent_at: null, created_at: "2026-11-01T02:00:00Z",
  lines: [
    { id: "l1", kind: "cpm_impressions", description: "CPM impressions (v1, band:0)", contract_id: "ctr_1", contract_version: 1,
      quantity: 100000, unit: "per_thousand", unit_price: "1500", amount: "150000" },
    { id: "l2", kind: "adjustment", adjustment_kind: "late_event", description: "Late impressions for 2026-09", contract_id: "ctr_1",
      contract_version: 1, quantity: 10, unit: "per_thousand", unit_price: "1500", amount: "15", corrects_period_key: "2026-09" },
  ],
  ...over,
})

const render = (inv: Invoice, subject: string, roles: ("finance" | "advertiser")[] = ["finance"]) => {
  const api = stubFetch((url, init) => {
    if (init.method === "POST" && url.pathname.endsWith("/finalize")) return { status: 202, body: { ...inv, prepared_by: subject, awaiting: "a second finance user (not the preparer) must finalize this invoice" } }
    if (url.pathname === `/api/invoicing/invoices/${inv.id}`) return { body: inv }
    return undefined
  })
  return { api, ...renderWithProviders(<InvoiceDetail />, {
    route: `/invoices/${inv.id}`, path: "/invoices/:id",
    preloadedState: signedInAs(roles.includes("advertiser") ? { subject, roles, tenantType: "advertiser", tenantId: "adv-acme" } : { subject, roles }),
  }) }
}

describe("invoice detail", () => {
  it("shows lines, the linked adjustment and money in JPY without minor units", async () => {
    render(invoice(), "fiona")
    expect(await screen.findByTestId("invoice-total")).toHaveTextContent(/JPY\s150,000$/)
    expect(screen.getByText(/adjustment \(late_event\) correcting 2026-09/)).toBeInTheDocument()
  })

  it("finalizing above the threshold waits for a second finance user", async () => {
    const { user, api } = render(invoice(), "fiona")
    await user.click(await screen.findByRole("button", { name: "Finalize" }))
    await waitFor(() => expect(api.calls.some((c) => c.method === "POST")).toBe(true))
    expect(await screen.findByText(/a second finance user \(not the preparer\)/)).toBeInTheDocument()
  })

  it("the preparer cannot give the second approval", async () => {
    render(invoice({ prepared_by: "fiona", prepared_at: "2026-11-02T09:00:00Z" }), "fiona")
    expect(await screen.findByRole("button", { name: "Finalize (second approval)" })).toBeDisabled()
    expect(screen.getByText(/that cannot be you/)).toBeInTheDocument()
  })

  it("a second finance user can", async () => {
    render(invoice({ prepared_by: "fiona", prepared_at: "2026-11-02T09:00:00Z" }), "felix")
    expect(await screen.findByRole("button", { name: "Finalize (second approval)" })).toBeEnabled()
  })

  it("an advertiser reads and downloads but has no write action", async () => {
    render(invoice({ status: "finalized", number: "INV-2026-000001" }), "acme-user", ["advertiser"])
    expect(await screen.findByRole("button", { name: "Download PDF" })).toBeInTheDocument()
    expect(screen.queryByRole("button", { name: /Finalize|Void|sent/ })).not.toBeInTheDocument()
  })
})
