import { describe, expect, it } from "vitest"
import { screen, waitFor, within } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { ApprovalsQueue } from "../approvals/ApprovalsQueue"
import { ContractDetail } from "../contracts/ContractDetail"
import { ContractsList } from "../contracts/ContractsList"
import { cpmTemplate } from "../contracts/templates"
import type { Contract, ContractVersion } from "../contracts/types"
import { StatementsList } from "../invoices/DocumentsList"
import type { Party } from "./api"
import { partyIdsKey, partyLabel, type PartyNames } from "./names"

const contract = (id: string, advertiser: string, over: Partial<Contract> = {}): Contract => ({
  id, name: `Contract ${id}`, contract_type: "cpm", advertiser_id: advertiser, partner_ids: [], currency: "USD",
  time_zone: "America/New_York", status: "active", current_version: 1, revision: 1, created_at: "2026-11-01T10:00:00Z",
  created_by: "olga", terminated_at: null, versions: [{ version: 1, kind: "initial", state: "approved" }], ...over,
})

const version: ContractVersion = {
  contract_id: "ctr_1", version: 1, kind: "initial", state: "approved", terms: cpmTemplate("adv-acme", new Date("2026-11-01")),
  effective_from: "2026-11-01T04:00:00Z", ends_at: null, backdated: false, committed_value: null, etag: '"e1"',
  authors: ["olga"], submitted_by: "olga", submitted_at: "2026-11-01T11:00:00Z", submission: 1, required_approvals: { approver: 1 },
  approvals: [], missing_approvals: {}, decided_at: null, decided_by: null, decision_comment: null,
  comment: null, created_at: "2026-11-01T10:00:00Z", updated_at: "2026-11-01T11:00:00Z",
}

const REGISTRY: Party[] = [
  { type: "advertiser", id: "adv-acme", name: "Acme Corp", updated_at: "2026-11-01T00:00:00Z" },
  { type: "partner", id: "ptn-streamly", name: "Streamly", updated_at: "2026-11-01T00:00:00Z" },
  // the same id as a partner's: shown only where a partner is meant
  { type: "advertiser", id: "ptn-castly", name: "Castly Ads", updated_at: "2026-11-01T00:00:00Z" },
]

/** What GET /parties answers: the registry's entries among the ids asked for. */
function parties(url: URL) {
  const ids = (url.searchParams.get("ids") ?? "").split(",")
  return { body: { items: REGISTRY.filter((p) => ids.includes(p.id)) } }
}

const OPS = signedInAs({ subject: "olga", roles: ["ops"] })

describe("names beside ids", () => {
  it("asks once for the page's ids, each once and sorted, and shows the name with the id beside it", async () => {
    const { calls } = stubFetch((url) => {
      if (url.pathname === "/api/contracts/parties") return parties(url)
      if (url.pathname === "/api/contracts/contracts")
        return { body: { items: [contract("ctr_1", "adv-acme"), contract("ctr_2", "adv-zeta"), contract("ctr_3", "adv-acme")], next_cursor: null } }
      return undefined
    })
    renderWithProviders(<ContractsList />, { preloadedState: OPS })
    await waitFor(() => expect(screen.getByTestId("advertiser-ctr_1")).toHaveTextContent("Acme Corp (adv-acme)"))
    expect(screen.getByTestId("advertiser-ctr_3")).toHaveTextContent("Acme Corp (adv-acme)")
    // an id with no name is shown alone
    expect(screen.getByTestId("advertiser-ctr_2").textContent).toBe("adv-zeta")
    const asked = calls.filter((c) => c.url.pathname === "/api/contracts/parties")
    expect(asked).toHaveLength(1)
    expect(asked[0]?.url.searchParams.get("ids")).toBe("adv-acme,adv-zeta")
  })

  it("shows ids alone while the names load and when the lookup fails", async () => {
    stubFetch((url) => {
      if (url.pathname === "/api/contracts/parties") return { status: 503, body: { title: "Service Unavailable", status: 503 } }
      if (url.pathname === "/api/contracts/contracts") return { body: { items: [contract("ctr_1", "adv-acme")], next_cursor: null } }
      return undefined
    })
    renderWithProviders(<ContractsList />, { preloadedState: OPS })
    expect(await screen.findByTestId("advertiser-ctr_1")).toHaveTextContent(/^adv-acme$/)
    expect(screen.queryByRole("alert")).not.toBeInTheDocument()
  })

  it("names the advertiser and the partners on the contract page", async () => {
    const c = contract("ctr_1", "adv-acme", { contract_type: "cpa", partner_ids: ["ptn-castly", "ptn-streamly"] })
    const { calls } = stubFetch((url) => {
      if (url.pathname === "/api/contracts/parties") return parties(url)
      if (url.pathname === "/api/contracts/contracts/ctr_1") return { body: c }
      if (url.pathname === "/api/contracts/contracts/ctr_1/versions") return { body: { items: [version] } }
      if (url.pathname === "/api/contracts/contracts/ctr_1/audit") return { body: { items: [], next_cursor: null } }
      return undefined
    })
    renderWithProviders(<ContractDetail />, { route: "/contracts/ctr_1", path: "/contracts/:contractId", preloadedState: OPS })
    const partners = await screen.findByText("Partners")
    await waitFor(() => expect(partners.nextElementSibling).toHaveTextContent("ptn-castly, Streamly (ptn-streamly)"))
    // the contract's facts (the terms below show the terms' own advertiser id)
    expect(screen.getAllByText("Advertiser")[0]?.nextElementSibling).toHaveTextContent("Acme Corp (adv-acme)")
    expect(calls.filter((x) => x.url.pathname === "/api/contracts/parties").map((x) => x.url.searchParams.get("ids")))
      .toEqual(["adv-acme,ptn-castly,ptn-streamly"])
  })

  it("names the advertiser of each version waiting for approval", async () => {
    stubFetch((url) => {
      if (url.pathname === "/api/contracts/parties") return parties(url)
      if (url.pathname !== "/api/contracts/approvals") return undefined
      const c = contract("ctr_s", "adv-acme")
      return { body: { next_cursor: null, items: [{
        contract: { id: c.id, name: c.name, advertiser_id: c.advertiser_id, status: "scheduled", currency: c.currency, time_zone: c.time_zone },
        version: { ...version, contract_id: c.id, state: "submitted", missing_approvals: { approver: 1 } }, can_decide: true, why_not: null,
      }] } }
    })
    renderWithProviders(<ApprovalsQueue />, { preloadedState: signedInAs({ subject: "arjun", roles: ["approver"] }) })
    const row = await screen.findByTestId("approval-ctr_s-1")
    await waitFor(() => expect(within(row).getByText("Acme Corp")).toBeInTheDocument())
    expect(row).toHaveTextContent("Acme Corp (adv-acme)")
  })

  it("names the partner of each payout statement", async () => {
    stubFetch((url) => {
      if (url.pathname === "/api/contracts/parties") return parties(url)
      if (url.pathname !== "/api/invoicing/statements") return undefined
      return { body: { next_cursor: null, items: [
        { id: "st-1", partner_id: "ptn-streamly", currency: "USD", period_key: "2026-10", status: "finalized", number: "PS-2026-000001",
          lines_total: "30.00", carried_in: "0", amount_payable: "30.00", carried_out: "0" },
      ] } }
    })
    renderWithProviders(<StatementsList />, {
      preloadedState: signedInAs({ subject: "streamly-user", roles: ["partner"], tenantType: "partner", tenantId: "ptn-streamly" }),
    })
    const row = await screen.findByTestId("doc-st-1")
    await waitFor(() => expect(row).toHaveTextContent("Streamly (ptn-streamly)"))
  })
})

describe("the lookup key and label", () => {
  it("keeps each id once, sorted, without blanks, and at most 100", () => {
    expect(partyIdsKey(["b", null, "a", "", undefined, "b"])).toBe("a,b")
    expect(partyIdsKey([])).toBe("")
    const many = Array.from({ length: 150 }, (_, i) => `id-${String(i).padStart(3, "0")}`)
    expect(partyIdsKey(many).split(",")).toHaveLength(100)
  })

  it("writes the name with the id, or the id alone", () => {
    const names: PartyNames = (type, id) => (type === "advertiser" && id === "adv-acme" ? "Acme Corp" : undefined)
    expect(partyLabel(names, "advertiser", "adv-acme")).toBe("Acme Corp (adv-acme)")
    expect(partyLabel(names, "partner", "adv-acme")).toBe("adv-acme")
  })
})
