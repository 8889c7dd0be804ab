import { describe, expect, it } from "vitest"
import { screen, waitFor, within } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import type { User } from "../session/sessionSlice"
import { cpmTemplate } from "../contracts/templates"
import type { Contract, ContractVersion } from "../contracts/types"
import { canDecide, shownState, whyNoDecision } from "../contracts/versionRules"
import { ApprovalsQueue } from "./ApprovalsQueue"

const contract = (id: string, status: Contract["status"], over: Partial<Contract> = {}): Contract => ({
  id, name: `Contract ${id}`, contract_type: "cpm", advertiser_id: "adv-acme", partner_ids: [], currency: "USD",
  time_zone: "America/New_York", status, current_version: 1, revision: 1, created_at: "2026-11-01T10:00:00Z", created_by: "olga",
  terminated_at: null, versions: [{ version: 1, kind: "initial", state: "approved" }, { version: 2, kind: "amendment", state: "submitted" }],
  ...over,
})

const version = (contractId: string, over: Partial<ContractVersion> = {}): ContractVersion => ({
  contract_id: contractId, version: 2, kind: "amendment", state: "submitted", terms: cpmTemplate("adv-acme", new Date("2026-11-01")),
  effective_from: "2026-12-01T05:00:00Z", ends_at: null, backdated: false, committed_value: "250000.00", etag: '"e2"',
  authors: ["olga"], submitted_by: "olga", submitted_at: "2026-12-01T17:00:00Z", required_approvals: { approver: 1, finance: 1 },
  approvals: [], missing_approvals: { approver: 1, finance: 1 }, decided_at: null, decided_by: null, decision_comment: null,
  comment: null, created_at: "2026-11-20T10:00:00Z", updated_at: "2026-11-20T11:00:00Z", ...over,
})

const user = (subject: string, roles: User["roles"]): User => ({ subject, roles, tenantType: null, tenantId: null, expiresAt: 4_102_444_800 })

describe("who may decide on a submitted version", () => {
  it("offers Approve only to a role the version still waits for, never to admin, the author or who already approved", () => {
    const v = version("ctr_a")
    expect(canDecide(user("arjun", ["approver"]), v)).toBe(true)
    expect(canDecide(user("ada", ["admin"]), v)).toBe(false)
    expect(canDecide(user("olga", ["approver"]), v)).toBe(false)
    const approved = version("ctr_a", { approvals: [{ approver: "arjun", role: "approver", comment: null, at: "2026-12-01T18:00:00Z" }], missing_approvals: { finance: 1 } })
    expect(canDecide(user("arjun", ["approver"]), approved)).toBe(false)
    expect(whyNoDecision(user("arjun", ["approver"]), approved)).toBe("You approved; waits for 1 × finance.")
    expect(canDecide(user("fiona", ["finance"]), approved)).toBe(true)
    expect(canDecide(user("felix", ["approver"]), approved)).toBe(false)
    expect(whyNoDecision(user("felix", ["approver"]), approved)).toBe("Not for your role: waits for 1 × finance.")
  })

  it("calls an approved version superseded once a later approved version is in force", () => {
    const v1 = { version: 1, state: "approved" as const, kind: "initial" as const, effective_from: "2026-11-01T04:00:00Z" }
    const v2 = { version: 2, state: "approved" as const, kind: "amendment" as const, effective_from: "2026-12-01T05:00:00Z" }
    expect(shownState(v1, [v1, v2], Date.parse("2026-12-02T00:00:00Z"))).toBe("superseded")
    expect(shownState(v1, [v1, v2], Date.parse("2026-11-30T00:00:00Z"))).toBe("approved")
    expect(shownState(v2, [v1, v2], Date.parse("2026-12-02T00:00:00Z"))).toBe("approved")
    expect(shownState(v1, [v1, { ...v2, state: "submitted" }], Date.parse("2026-12-02T00:00:00Z"))).toBe("approved")
  })
})

describe("approvals queue", () => {
  // two pages of contracts; the waiting amendment is on a scheduled contract on the second page
  function queueApi() {
    return stubFetch((url) => {
      if (url.pathname === "/api/contracts/contracts") {
        expect(url.searchParams.get("status")).toBeNull()
        return url.searchParams.get("cursor") === "p2"
          ? { body: { items: [contract("ctr_s", "scheduled")], next_cursor: null } }
          : { body: { items: [contract("ctr_x", "active", { versions: [{ version: 1, kind: "initial", state: "approved" }] })], next_cursor: "p2" } }
      }
      if (url.pathname === "/api/contracts/contracts/ctr_s/versions")
        return { body: { items: [version("ctr_s", { version: 1, kind: "initial", state: "approved", missing_approvals: {} }), version("ctr_s")] } }
      return undefined
    })
  }

  it("pages through contracts of every state and lists what each version still misses", async () => {
    const { calls } = queueApi()
    renderWithProviders(<ApprovalsQueue />, { preloadedState: signedInAs({ subject: "arjun", roles: ["approver"] }) })
    const row = await screen.findByTestId("approval-ctr_s-2")
    expect(calls.filter((c) => c.url.pathname === "/api/contracts/contracts")).toHaveLength(2)
    expect(within(row).getByTestId("missing-ctr_s-2")).toHaveTextContent("1 × approver and 1 × finance")
    expect(within(row).getByRole("button", { name: /Approve v2/ })).toBeInTheDocument()
    expect(within(row).getByText(/1 Dec 2026, 12:00 EST/)).toBeInTheDocument()
    expect(document.title).toBe("Approvals · Tally console")
  })

  it("gives admin no Approve button and says whom the version waits for", async () => {
    queueApi()
    const { user } = renderWithProviders(<ApprovalsQueue />, { preloadedState: signedInAs({ subject: "ada", roles: ["admin"] }) })
    expect(await screen.findByText(/Nothing waits for your roles/)).toBeInTheDocument()
    await user.selectOptions(screen.getByLabelText("Show"), "all")
    const row = await screen.findByTestId("approval-ctr_s-2")
    expect(within(row).queryByRole("button", { name: /Approve/ })).not.toBeInTheDocument()
    expect(row).toHaveTextContent("Not for your role: waits for 1 × approver and 1 × finance.")
    await waitFor(() => expect(screen.queryByRole("navigation", { name: "Pages" })).not.toBeInTheDocument())
  })
})
