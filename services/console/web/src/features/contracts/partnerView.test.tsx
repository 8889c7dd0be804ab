import { describe, expect, it } from "vitest"
import { screen } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { ContractDetail } from "./ContractDetail"
import type { Contract, PartnerVersion } from "./types"

const contract = {
  id: "ctr_9", name: "Shop CPA", contract_type: "cpa", advertiser_id: "adv-shop", partner_ids: ["ptn-streamly"],
  currency: "EUR", time_zone: "Europe/Berlin", status: "active", current_version: 1, revision: 3,
  created_at: "2026-02-01T10:00:00Z", terminated_at: null, versions: [{ version: 1, kind: "initial", state: "approved" }],
  view: "partner",
} as unknown as Contract

const partnerVersion: PartnerVersion = {
  view: "partner", contract_id: "ctr_9", version: 1, kind: "initial", state: "approved",
  effective_from: "2026-01-31T23:00:00Z", ends_at: null, etag: '"e"', decided_at: "2026-01-20T10:00:00Z",
  terms: {
    view: "partner", contract_type: "cpa",
    common: { currency: "EUR", time_zone: "Europe/Berlin", billing_period: "month", flight_start: "2026-02-01",
              flight_end: null, campaign_ids: ["cmp-200"] },
    cpa: {
      payouts: [{ event_type: "signup", partner_payout: { kind: "flat", amount: "2.50" },
                  tiers: [{ from_conversions: 1000, partner_payout: { kind: "flat", amount: "2.00" } }] }],
      partner_overrides: [], attribution: { lookback_days: 14, model: "last_touch", min_delay_seconds: 0 }, caps: { per_partner: null },
    },
  },
}

describe("partner view of a contract", () => {
  it("shows the partner's payouts and flight, and nothing of the advertiser's side", async () => {
    stubFetch((url) => {
      if (url.pathname === "/api/contracts/contracts/ctr_9") return { body: contract }
      if (url.pathname === "/api/contracts/contracts/ctr_9/versions") return { body: { items: [partnerVersion] } }
      return undefined
    })
    renderWithProviders(<ContractDetail />, {
      route: "/contracts/ctr_9", path: "/contracts/:contractId",
      preloadedState: signedInAs({ subject: "streamly-user", roles: ["partner"], tenantType: "partner", tenantId: "ptn-streamly" }),
    })
    expect(await screen.findByText("Your payouts")).toBeInTheDocument()
    expect(screen.getByText(/from 1000/)).toBeInTheDocument()
    expect(screen.queryByText("Advertiser pays")).not.toBeInTheDocument()
    expect(screen.queryByText(/PO /)).not.toBeInTheDocument()
  })
})
