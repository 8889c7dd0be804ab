import { describe, expect, it } from "vitest"
import { fireEvent, screen } from "@testing-library/react"
import { useLocation } from "react-router"
import { niceTicks } from "../../lib/decimal"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { PacingPanel } from "./PacingPanel"
import type { Pacing, Series } from "./types"

const pacing = (over: Partial<Pacing> = {}): Pacing => ({
  contract_id: "ctr_1", advertiser_id: "adv-acme", currency: "USD", time_zone: "America/New_York", period_key: "2026-12",
  period_status: "open", spend: "10", status: "over", alert_state: "cap_exhaustion_projected", pace_pct: "250.5",
  expected_spend: "4", projected_spend: "6250.123", projected_cap_at: "2026-12-20T17:00:00+00:00", cap_reached: false,
  budget_cap_per_period: "25", budget_cap_total: "900", as_of: "2026-12-02T03:00:00+00:00", ...over,
})
const series = (granularity: "hour" | "day"): Series => ({
  contract_id: "ctr_1", period_key: "2026-12", currency: "USD", time_zone: "America/New_York", granularity,
  points: [
    { start: "2026-12-01T05:00:00+00:00", end: "2026-12-01T06:00:00+00:00", spend: "4", cumulative_spend: "4", billable: 320, cumulative_billable: 320 },
    { start: "2026-12-01T06:00:00+00:00", end: "2026-12-01T07:00:00+00:00", spend: "6", cumulative_spend: "10", billable: 480, cumulative_billable: 800 },
  ],
})

function Where() {
  const { search } = useLocation()
  return <output data-testid="search">{search}</output>
}

describe("axis ticks", () => {
  it("are round exact decimals from 0 to at least the maximum", () => {
    expect(niceTicks("10")).toEqual(["0", "5", "10"])
    expect(niceTicks("0.37")).toEqual(["0", "0.1", "0.2", "0.3", "0.4"])
    expect(niceTicks("24.99975")).toEqual(["0", "10", "20", "30"])
    expect(niceTicks("0")).toEqual(["0"])
  })
})

describe("pacing panel", () => {
  it("shows the state, the forecasts and both caps, and keeps the range in the URL", async () => {
    const { calls } = stubFetch((url) => {
      if (url.pathname === "/api/pacing/v1/pacing") return { body: { items: [pacing({ period_key: "2026-11", period_status: "closed" }), pacing()], count: 2 } }
      if (url.pathname === "/api/pacing/v1/pacing/ctr_1/series") return { body: series(url.searchParams.get("granularity") === "day" ? "day" : "hour") }
      return undefined
    })
    const { user } = renderWithProviders(<><PacingPanel contractId="ctr_1" /><Where /></>, {
      preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }), route: "/contracts/ctr_1?range=day",
    })
    const facts = await screen.findByTestId("pacing-ctr_1-2026-12")
    expect(facts).toHaveTextContent(/over-pacing · 250\.5 % of the expected spend/)
    expect(screen.getByTestId("projected-spend")).toHaveTextContent(/USD\s6,250\.12/)
    expect(screen.getByTestId("projected-cap-at")).toHaveTextContent(/20 Dec 2026, 12:00 EST/)
    expect(screen.getByTestId("cap-per-period")).toHaveTextContent(/USD\s25\.00/)
    expect(screen.getByTestId("cap-total")).toHaveTextContent(/^USD\s900\.00 over the flight$/)
    // the range came from the URL: the day series was asked for
    await screen.findByRole("img", { name: /Cumulative spend per day: 2 days, up to USD\s10\.00/ })
    expect(screen.getByRole("radio", { name: "Days" })).toBeChecked()
    expect(calls.some((c) => c.url.searchParams.get("granularity") === "day" && c.url.searchParams.get("period_key") === "2026-12")).toBe(true)
    // hover values
    fireEvent.mouseEnter(screen.getByTestId("series-point-1"))
    expect(screen.getByTestId("series-readout")).toHaveTextContent(/USD\s6\.00 in the day, USD\s10\.00 so far, 480 billable/)
    // the cap is within sight of the spend, so it is drawn
    expect(screen.getByTestId("series-cap")).toBeInTheDocument()
    await user.click(screen.getByRole("radio", { name: "Hours" }))
    expect(screen.getByTestId("search")).toHaveTextContent("range=hour")
    await screen.findByRole("img", { name: /per hour: 2 hours/ })
    await user.selectOptions(screen.getByLabelText("Period"), "2026-11")
    expect(screen.getByTestId("search")).toHaveTextContent("period=2026-11")
  })

  it("paces the total cap over the flight when the pacing service does", async () => {
    stubFetch((url) => {
      if (url.pathname === "/api/pacing/v1/pacing") return { body: { count: 1, items: [pacing({ lifetime: {
        as_of: "2026-12-02T03:00:00+00:00", cap_total: "900", spend: "310.5", status: "over", projected_spend: "1200",
        projected_cap_at: "2027-06-01T04:00:00+00:00", cap_reached: false, window_start: "2026-11-01T04:00:00+00:00",
        window_end: "2028-01-01T05:00:00+00:00" } })] } }
      if (url.pathname.endsWith("/series")) return { body: series("hour") }
      return undefined
    })
    renderWithProviders(<PacingPanel contractId="ctr_1" />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(await screen.findByTestId("cap-total")).toHaveTextContent(
      /USD\s900\.00 over the flight: over USD\s310\.50 spent, projected USD\s1,200\.00 at the flight's end, cap reached 1 Jun 2027, 00:00 EDT/)
  })

  it("says so when the contract has no spend yet", async () => {
    stubFetch((url) => (url.pathname === "/api/pacing/v1/pacing" ? { body: { items: [], count: 0 } } : undefined))
    renderWithProviders(<PacingPanel contractId="ctr_1" />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(await screen.findByText("No spend recorded for this contract yet.")).toBeInTheDocument()
  })
})
