import { describe, expect, it } from "vitest"
import { screen, waitFor } from "@testing-library/react"
import { Route, Routes, useLocation } from "react-router"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { InvoiceDetail } from "./DocumentDetail"
import { InvoicesList, StatementsList } from "./DocumentsList"
import type { DocLine, Invoice } from "./types"

const INVOICE_ID = "6f1c0c3e-0000-4000-8000-000000000001"

const line = (over: Partial<DocLine>): DocLine => ({
  id: "l0", line_no: 1, invoice_id: INVOICE_ID, kind: "cpm_impressions", adjustment_kind: null, description: "", contract_id: "ctr_1",
  contract_version: 1, price_point: null, event_type: null, quantity: null, unit: null, unit_price: null, amount: "0",
  amount_exact: "0", close_id: null, corrects_period_key: null, corrects_invoice_id: null, corrects_line_id: null,
  created_by: null, created_at: "2026-11-01T02:00:00Z", ...over,
})

const invoice = (over: Partial<Invoice> = {}): Invoice => ({
  id: INVOICE_ID, advertiser_id: "adv-acme", currency: "JPY", period_key: "2026-10",
  period_start: "2026-09-30T15:00:00Z", period_end: "2026-10-31T15:00:00Z", payment_terms_days: 30,
  status: "draft", number: null, number_year: null, number_seq: null, total: "150000", issue_date: null, due_date: null,
  po_references: [], voided_at: null, voided_by: null, payment_reference: null,
  credit_note: null, prepared_by: null, prepared_at: null, finalized_by: null, approved_by: null, finalized_at: null,
  sent_by: null, sent_at: null, paid_by: null, paid_at: null, created_at: "2026-11-01T02:00:00Z", updated_at: "2026-11-01T02:00:00Z",
  lines: [
    line({ id: "l1", kind: "cpm_impressions", description: "CPM impressions (v1, band:0)", contract_id: "ctr_1", contract_version: 1,
      quantity: 100000, unit: "per_thousand", unit_price: "1500", amount: "150000", amount_exact: "150000" }),
    line({ id: "l2", line_no: 2, kind: "adjustment", adjustment_kind: "late_event", description: "Late impressions for 2026-09",
      contract_id: "ctr_1", contract_version: 1, quantity: 10, unit: "per_thousand", unit_price: "1500", amount: "15",
      amount_exact: "15", corrects_period_key: "2026-09" }),
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

describe("open period invoice preview", () => {
  it("shows the lines the invoice would carry, marked provisional, with when it was computed and when the period closes", async () => {
    const { InvoicesList } = await import("./DocumentsList")
    const { previewLines } = await import("./InvoicePreview")
    expect(previewLines({ contract_id: "c", advertiser_id: "a", currency: "USD", period_key: "2026-12", amount_exact: "40.5", minimum_commitment: "100.00" }))
      .toEqual([{ description: "Billable impressions so far", amount: "40.5" }, { description: "Minimum commitment shortfall (if nothing else arrives)", amount: "59.5" }])
    stubFetch((url) => {
      if (url.pathname === "/api/metering/v1/spend")
        return { body: { items: [{ contract_id: "ctr_1", advertiser_id: "adv-acme", currency: "USD", period_key: "2026-12", status: "open",
          amount_exact: "40.5", minimum_commitment: "100.00", counts: { billable: 3240 }, updated_at: "2026-12-10T17:00:00Z" }] } }
      if (url.pathname === "/api/contracts/contracts")
        return { body: { items: [{ id: "ctr_1", name: "Acme CTV Q4", time_zone: "America/New_York" }], next_cursor: null } }
      if (url.pathname === "/api/invoicing/invoices") return { body: { items: [], next_cursor: null } }
      return undefined
    })
    renderWithProviders(<InvoicesList />, { preloadedState: signedInAs({ subject: "fiona", roles: ["finance"] }) })
    const doc = await screen.findByTestId("preview-ctr_1-2026-12")
    await waitFor(() => expect(doc).toHaveTextContent("Acme CTV Q4"))
    expect(screen.getByRole("heading", { name: /invoice preview\s*provisional/ })).toBeInTheDocument()
    expect(screen.getByTestId("preview-total-ctr_1-2026-12").textContent.replace(/\u00a0/g, " ")).toBe("USD 100.00")
    expect(doc).toHaveTextContent("Billable impressions so far (3,240)")
    expect(doc).toHaveTextContent("running total of 10 Dec 2026, 12:00 EST")
    expect(doc).toHaveTextContent("The period ends 1 Jan 2027, 00:00 EST")
    expect(doc).toHaveTextContent("about 1 Jan 2027, 02:00 EST")
    expect(await screen.findByText("No invoices yet.")).toBeInTheDocument()
  })
})

describe("payout statements list", () => {
  it("shows what was earned, the balance carried in, what is payable and what is carried forward", async () => {
    stubFetch((url) => url.pathname === "/api/invoicing/statements" ? { body: { next_cursor: null, items: [
      { id: "st-1", partner_id: "ptn-streamly", currency: "USD", period_key: "2026-10", status: "finalized", number: "PS-2026-000001",
        lines_total: "30.00", carried_in: "0", amount_payable: "0", carried_out: "30.00" },
      { id: "st-2", partner_id: "ptn-streamly", currency: "USD", period_key: "2026-11", status: "draft", number: null,
        lines_total: "80.50", carried_in: "30.00", amount_payable: "110.50", carried_out: "0" },
    ] } } : undefined)
    renderWithProviders(<StatementsList />, {
      preloadedState: signedInAs({ subject: "streamly-user", roles: ["partner"], tenantType: "partner", tenantId: "ptn-streamly" }),
    })
    const carried = await screen.findByTestId("carried-out-st-1")
    expect(carried).toHaveTextContent(/USD\s30\.00/)
    const row = screen.getByTestId("doc-st-2")
    expect(row).toHaveTextContent(/USD\s80\.50.*USD\s30\.00.*USD\s110\.50.*USD\s0\.00/)
    expect(screen.getByRole("columnheader", { name: "Carried in" })).toBeInTheDocument()
  })
})

describe("invoices list", () => {
  it("searches by advertiser with the API's advertiser_id filter", async () => {
    const { calls } = stubFetch((url) => url.pathname === "/api/invoicing/invoices" ? { body: { next_cursor: null, items: [] } } : undefined)
    const { user } = renderWithProviders(<InvoicesList />, { preloadedState: signedInAs({ subject: "fiona", roles: ["finance"] }) })
    await user.type(await screen.findByLabelText("Advertiser"), "adv-acme")
    await waitFor(() => expect(calls.some((c) => c.url.pathname === "/api/invoicing/invoices" && c.url.searchParams.get("advertiser_id") === "adv-acme")).toBe(true))
    expect(await screen.findByText("No invoices match these filters.")).toBeInTheDocument()
  })
  it("searches by invoice number with the API's number filter, kept in the URL so a reload keeps it", async () => {
    const found = { id: INVOICE_ID, advertiser_id: "adv-acme", currency: "USD", period_key: "2026-10", status: "finalized",
      number: "INV-2026-000042", total: "12.50" }
    const { calls } = stubFetch((url) => url.pathname === "/api/invoicing/invoices"
      ? { body: { next_cursor: null, items: url.searchParams.get("number") === "INV-2026-000042" ? [found] : [] } } : undefined)
    let search = ""
    const Where = () => { search = useLocation().search; return null }
    const { user, unmount } = renderWithProviders(<Routes><Route path="*" element={<><InvoicesList /><Where /></>} /></Routes>,
      { route: "/invoices", preloadedState: signedInAs({ subject: "fiona", roles: ["finance"] }) })
    await user.type(await screen.findByLabelText("Invoice number"), "INV-2026-000042")
    expect(await screen.findByRole("link", { name: "INV-2026-000042" })).toHaveAttribute("href", `/invoices/${INVOICE_ID}`)
    await waitFor(() => expect(new URLSearchParams(search).get("number")).toBe("INV-2026-000042"))
    unmount()

    // opened again at that URL (a reload): the box holds the number and the list asks for it at once
    calls.length = 0
    renderWithProviders(<InvoicesList />, { route: `/invoices${search}`, preloadedState: signedInAs({ subject: "fiona", roles: ["finance"] }) })
    expect(await screen.findByLabelText("Invoice number")).toHaveValue("INV-2026-000042")
    expect(await screen.findByRole("link", { name: "INV-2026-000042" })).toBeInTheDocument()
    expect(calls.filter((c) => c.url.pathname === "/api/invoicing/invoices").map((c) => c.url.searchParams.get("number"))).toEqual(["INV-2026-000042"])
  })
  it("explains a number the API would refuse at its field and does not ask for it", async () => {
    const { calls } = stubFetch((url) => url.pathname === "/api/invoicing/invoices" ? { body: { next_cursor: null, items: [] } } : undefined)
    const { user } = renderWithProviders(<InvoicesList />, { preloadedState: signedInAs({ subject: "acme-user", roles: ["advertiser"], tenantType: "advertiser", tenantId: "adv-acme" }) })
    const box = await screen.findByLabelText("Invoice number")
    await user.type(box, "INV 2026")
    expect(box).toHaveAttribute("aria-invalid", "true")
    expect(screen.getByText(/Enter a whole number such as INV-2026-000042/)).toBeInTheDocument()
    expect(calls.some((c) => c.url.searchParams.get("number")?.includes(" "))).toBe(false)
    await user.clear(box)
    await user.type(box, "inv-2026-*")
    await waitFor(() => expect(calls.some((c) => c.url.searchParams.get("number") === "inv-2026-*")).toBe(true))
    expect(box).toHaveAttribute("aria-invalid", "false")
    expect(await screen.findByText("No invoices match these filters.")).toBeInTheDocument()
  })
  it("offers no advertiser search to an advertiser (its own only)", async () => {
    stubFetch((url) => url.pathname === "/api/invoicing/invoices" ? { body: { next_cursor: null, items: [] } } : undefined)
    renderWithProviders(<InvoicesList />, { preloadedState: signedInAs({ subject: "acme-user", roles: ["advertiser"], tenantType: "advertiser", tenantId: "adv-acme" }) })
    await screen.findByRole("heading", { name: "Invoices" })
    expect(screen.queryByLabelText("Advertiser")).not.toBeInTheDocument()
  })
})
