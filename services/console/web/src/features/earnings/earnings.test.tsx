import { describe, expect, it } from "vitest"
import { screen, within } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { byEventType, PartnerEarnings } from "./PartnerEarnings"
import type { Earning } from "./types"

const earning = (over: Partial<Earning> = {}): Earning => ({
  contract_id: "ctr_shop", partner_id: "ptn-streamly", contract_type: "cpa", currency: "EUR", time_zone: "Europe/Berlin",
  period_kind: "month", period_key: "2026-11", period_start: "2026-10-31T23:00:00+00:00", period_end: "2026-11-30T23:00:00+00:00",
  closes_at: "2026-12-01T01:00:00+00:00", status: "open", provisional: true, conversions: 4, amount_exact: "4.583125",
  lines: [
    { contract_version: 1, event_type: "purchase", quantity: 3, amount_exact: "2.083125" },
    { contract_version: 2, event_type: "signup", quantity: 1, amount_exact: "2.5" },
  ],
  latest_event_time: "2026-11-20T10:00:00+00:00", updated_at: "2026-11-20T10:00:05+00:00", ...over,
})

const partner = signedInAs({ subject: "streamly-user", roles: ["partner"], tenantType: "partner", tenantId: "ptn-streamly" })

describe("a partner's earnings", () => {
  it("shows the open period's conversions and exact earnings per contract, provisional, computed at and closing on", async () => {
    const { calls } = stubFetch((url) => {
      if (url.pathname === "/api/metering/v1/earnings") return { body: { items: [earning()], count: 1 } }
      if (url.pathname === "/api/contracts/contracts") return { body: { items: [{ id: "ctr_shop", name: "Shop CPA 2026" }], next_cursor: null } }
      return undefined
    })
    renderWithProviders(<PartnerEarnings />, { preloadedState: partner })
    const row = await screen.findByTestId("earning-ctr_shop-2026-11")
    expect(screen.getByRole("heading", { name: /Earnings this period/, level: 1 })).toHaveTextContent("provisional")
    // money in the contract's currency to its minor unit, the exact decimal string (never a float) kept beside it
    const amount = within(row).getByTestId("earning-amount-ctr_shop-2026-11")
    expect(amount).toHaveTextContent(/EUR\s4\.58/)
    expect(amount.querySelector("data")).toHaveAttribute("value", "4.583125")
    expect(within(row).getByText("4")).toBeInTheDocument()
    expect(within(row).getByText("purchase 3 · signup 1")).toBeInTheDocument()
    expect(await within(row).findByText(/Shop CPA 2026/)).toBeInTheDocument()
    // computed-at and closes-on, in the contract's zone, as machine-readable times
    const stamps = [...row.querySelectorAll("time")].map((t) => t.getAttribute("dateTime"))
    expect(stamps).toEqual(["2026-11-20T10:00:05+00:00", "2026-12-01T01:00:00+00:00"])
    // only the open period is asked for, only of the earnings API
    const asked = calls.find((c) => c.url.pathname === "/api/metering/v1/earnings")
    expect(asked?.url.searchParams.get("status")).toBe("open")
    expect(calls.some((c) => c.url.pathname.includes("/spend"))).toBe(false)
  })

  it("says when there is nothing yet, and names a failure without a dead Retry", async () => {
    stubFetch((url) => (url.pathname === "/api/metering/v1/earnings" ? { body: { items: [], count: 0 } } : undefined))
    const { unmount } = renderWithProviders(<PartnerEarnings />, { preloadedState: partner })
    expect(await screen.findByText("No open period has earnings yet.")).toBeInTheDocument()
    unmount()
    stubFetch((url) => (url.pathname === "/api/metering/v1/earnings" ? { status: 403, body: { title: "Forbidden", status: 403 } } : undefined))
    renderWithProviders(<PartnerEarnings />, { preloadedState: partner })
    expect(await screen.findByRole("alert")).toHaveTextContent(/load your earnings/i)
    expect(screen.queryByRole("button", { name: "Retry" })).not.toBeInTheDocument()
  })

  it("sums conversions per event type across contract versions", () => {
    expect(byEventType(earning({ lines: [
      { contract_version: 1, event_type: "purchase", quantity: 2, amount_exact: "1" },
      { contract_version: 2, event_type: "purchase", quantity: 1200, amount_exact: "1" },
    ] }))).toBe("purchase 1,202")
    expect(byEventType(earning({ lines: [] }))).toBe("")
  })
})
