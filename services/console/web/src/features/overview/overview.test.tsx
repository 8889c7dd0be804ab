import { describe, expect, it } from "vitest"
import { screen, within } from "@testing-library/react"
import { renderWithProviders, signedInAs } from "../../test/utils"
import { liveSpendSlice, spendSampled, MAX_POINTS } from "./liveSpendSlice"
import { alertsFor, Overview } from "./Overview"
import type { SpendRow } from "./types"

const row = (amount: string, over: Partial<SpendRow> = {}): SpendRow => ({
  contract_id: "ctr_1", advertiser_id: "adv-acme", currency: "USD", period_key: "2026-11", amount_exact: amount,
  budget_cap_per_period: "100.00", ...over,
})

describe("live spend slice", () => {
  it("sums totals per currency exactly and keeps a bounded history", () => {
    let state = liveSpendSlice.reducer(undefined, spendSampled({ at: 1, rows: [row("0.1"), row("0.2", { contract_id: "ctr_2" })], fromEvent: true }))
    expect(state.points[0]?.totals).toEqual({ USD: "0.3" })
    for (let i = 0; i < MAX_POINTS + 5; i++) state = liveSpendSlice.reducer(state, spendSampled({ at: i, rows: [], fromEvent: false }))
    expect(state.points).toHaveLength(MAX_POINTS)
    expect(state.eventsReceived).toBe(1)
  })
  it("raises budget alerts at 50, 80 and 100 % of the cap", () => {
    expect(alertsFor([row("49.99")])).toEqual([])
    expect(alertsFor([row("80")])[0]?.threshold_pct).toBe(80)
    expect(alertsFor([row("120")])[0]?.threshold_pct).toBe(100)
  })
})

function sseBody(chunks: string[]): { body: ReadableStream<Uint8Array>; push: (s: string) => void } {
  let ctrl!: ReadableStreamDefaultController<Uint8Array>
  const body = new ReadableStream<Uint8Array>({ start: (c) => { ctrl = c } })
  const push = (s: string) => ctrl.enqueue(new TextEncoder().encode(s))
  chunks.forEach(push)
  return { body, push }
}

describe("overview", () => {
  it("updates the running spend as events arrive, without a reload", async () => {
    const stream = sseBody([])
    vi.stubGlobal("fetch", vi.fn((input: RequestInfo | URL) => {
      const url = input instanceof Request ? input.url : String(input)
      if (url.endsWith("/api/metering/v1/spend/stream"))
        return Promise.resolve(new Response(stream.body, { headers: { "Content-Type": "text/event-stream" } }))
      return Promise.resolve(new Response(JSON.stringify({ items: [row("10.00")], count: 1 }), { headers: { "Content-Type": "application/json" } }))
    }))
    renderWithProviders(<Overview />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(await screen.findByTestId("spend-amount-ctr_1-2026-11")).toHaveTextContent(/USD\s10\.00/)
    expect(await screen.findByText(/● Live/)).toBeInTheDocument()
    stream.push(`event: total\ndata: ${JSON.stringify(row("85.50"))}\n\n`)
    expect(await screen.findByText(/USD\s85\.50/, { selector: "[data-testid='spend-amount-ctr_1-2026-11']" })).toBeInTheDocument()
    expect(screen.getByText("85.5 %")).toBeInTheDocument()
    expect(screen.getByRole("img", { name: /Running spend in USD: USD\s85\.50 after 2 updates/ })).toBeInTheDocument()
    expect(screen.getByText("80 %")).toBeInTheDocument()
  })
})

describe("overview rows", () => {
  it("shows one row per contract and period, each named by its period and state", async () => {
    const rows = [row("0", { period_key: "2026-11", status: "closed" }), row("5.00", { period_key: "2026-12", status: "open" })]
    vi.stubGlobal("fetch", vi.fn((input: RequestInfo | URL) => {
      const url = input instanceof Request ? input.url : String(input)
      if (url.endsWith("/api/metering/v1/spend/stream"))
        return Promise.resolve(new Response(sseBody([]).body, { headers: { "Content-Type": "text/event-stream" } }))
      return Promise.resolve(new Response(JSON.stringify({ items: rows, count: 2 }), { headers: { "Content-Type": "application/json" } }))
    }))
    renderWithProviders(<Overview />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(await screen.findByTestId("spend-amount-ctr_1-2026-11")).toHaveTextContent(/USD\s0\.00/)
    expect(screen.getByTestId("spend-amount-ctr_1-2026-12")).toHaveTextContent(/USD\s5\.00/)
    expect(screen.getByTestId("spend-ctr_1-2026-11")).toHaveTextContent(/2026-11\s·\sclosed/)
    expect(screen.getByTestId("spend-ctr_1-2026-12")).toHaveTextContent(/2026-12\s·\sopen/)
  })
})

describe("budget burn and alerts", () => {
  it("agree: 24.99975 of 25.00 burns 99.9 % in amber beside an 80 % alert, and the alert line keeps amount and date apart", async () => {
    const rows = [row("24.99975", { currency: "EUR", budget_cap_per_period: "25.00", period_key: "2026-12", updated_at: "2026-12-01T12:00:00Z" })]
    vi.stubGlobal("fetch", vi.fn((input: RequestInfo | URL) => {
      const url = input instanceof Request ? input.url : String(input)
      if (url.endsWith("/api/metering/v1/spend/stream"))
        return Promise.resolve(new Response(sseBody([]).body, { headers: { "Content-Type": "text/event-stream" } }))
      if (url.includes("/api/contracts/contracts"))
        return Promise.resolve(new Response(JSON.stringify({ items: [{ id: "ctr_1", name: "Acme CTV Q4" }], next_cursor: null }), { headers: { "Content-Type": "application/json" } }))
      return Promise.resolve(new Response(JSON.stringify({ items: rows, count: 1 }), { headers: { "Content-Type": "application/json" } }))
    }))
    renderWithProviders(<Overview />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    const spend = await screen.findByTestId("spend-ctr_1-2026-12")
    expect(spend).toHaveTextContent("99.9 %")
    expect(spend).not.toHaveTextContent("100.0 %")
    expect(spend.querySelector(".burn-warn")).not.toBeNull()
    const alerts = screen.getByRole("complementary", { name: "Budget alerts" })
    expect(alerts).toHaveTextContent("80 %")
    expect(alerts.querySelector(".alert-facts")?.textContent.replace(/\u00a0/g, " ")).toBe("EUR 25.00 of EUR 25.00 · 1 Dec 2026")
    // names beside ids
    expect(await within(spend).findByRole("link", { name: /^Acme CTV Q4\s*\(ctr_1\)$/ })).toBeInTheDocument()
    expect(document.title).toBe("Running spend · Tally console")
  })
})
