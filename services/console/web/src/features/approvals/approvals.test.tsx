import { describe, expect, it } from "vitest"
import { screen, within } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import type { User } from "../session/sessionSlice"
import { cpmTemplate } from "../contracts/templates"
import type { Contract, ContractVersion } from "../contracts/types"
import { canDecide, shownState, whyNoDecision } from "../contracts/versionRules"
import { ApprovalsQueue } from "./ApprovalsQueue"
import type { QueueItem } from "./api"

const contract = (id: string, status: Contract["status"], over: Partial<Contract> = {}): Contract => ({
  id, name: `Contract ${id}`, contract_type: "cpm", advertiser_id: "adv-acme", partner_ids: [], currency: "USD",
  time_zone: "America/New_York", status, current_version: 1, revision: 1, created_at: "2026-11-01T10:00:00Z", created_by: "olga",
  terminated_at: null, versions: [{ version: 1, kind: "initial", state: "approved" }, { version: 2, kind: "amendment", state: "submitted" }],
  ...over,
})

const version = (contractId: string, over: Partial<ContractVersion> = {}): ContractVersion => ({
  contract_id: contractId, version: 2, kind: "amendment", state: "submitted", terms: cpmTemplate("adv-acme", new Date("2026-11-01")),
  effective_from: "2026-12-01T05:00:00Z", ends_at: null, backdated: false, committed_value: "250000.00", etag: '"e2"',
  authors: ["olga"], submitted_by: "olga", submitted_at: "2026-12-01T17:00:00Z", submission: 1, required_approvals: { approver: 1, finance: 1 },
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
  // the service's queue (GET /approvals): two pages of every submitted version, one per contract
  const item = (id: string, status: Contract["status"], canDecide: boolean, whyNot: string | null = null): QueueItem => {
    const full = version(id)
    const v: QueueItem["version"] = {
      version: full.version, kind: full.kind, effective_from: full.effective_from, ends_at: full.ends_at, backdated: full.backdated,
      committed_value: full.committed_value, etag: full.etag, authors: full.authors, submitted_by: full.submitted_by,
      submitted_at: full.submitted_at, submission: full.submission, required_approvals: full.required_approvals,
      approvals: full.approvals, missing_approvals: full.missing_approvals,
    }
    const c = contract(id, status)
    return {
      contract: { id, name: c.name, advertiser_id: c.advertiser_id, status, currency: c.currency, time_zone: c.time_zone },
      version: v, can_decide: canDecide, why_not: whyNot,
    }
  }

  /** ``mine``: what waiting_for=me answers this viewer */
  function queueApi(mine: QueueItem[] = [item("ctr_s", "scheduled", true)]) {
    return stubFetch((url) => {
      if (url.pathname !== "/api/contracts/approvals") return undefined
      const forMe = url.searchParams.get("waiting_for") === "me"
      expect(url.searchParams.get("limit")).toBe("20")
      if (url.searchParams.get("cursor") === "p2")
        return { body: { items: forMe ? [] : [item("ctr_t", "active", false, "maker-checker")], next_cursor: null } }
      return {
        body: forMe
          ? { items: mine, next_cursor: null }
          : { items: [item("ctr_s", "scheduled", false, "requires one of the roles: approver, finance")], next_cursor: "p2" },
      }
    })
  }

  it("reads the service's queue and lists what each version still misses", async () => {
    const { calls } = queueApi()
    renderWithProviders(<ApprovalsQueue />, { preloadedState: signedInAs({ subject: "arjun", roles: ["approver"] }) })
    const row = await screen.findByTestId("approval-ctr_s-2")
    const asked = calls.filter((c) => c.url.pathname === "/api/contracts/approvals")
    expect(asked).toHaveLength(1)
    expect(asked[0]?.url.searchParams.get("waiting_for")).toBe("me")
    expect(calls.filter((c) => c.url.pathname === "/api/contracts/contracts")).toHaveLength(0)
    expect(within(row).getByTestId("missing-ctr_s-2")).toHaveTextContent("1 × approver and 1 × finance")
    expect(within(row).getByRole("button", { name: /Approve v2/ })).toBeInTheDocument()
    expect(within(row).getByText(/1 Dec 2026, 12:00 EST/)).toBeInTheDocument()
    expect(document.title).toBe("Approvals · Tally console")
  })

  it("gives admin no Approve button, says whom the version waits for, and pages with the service's cursor", async () => {
    const { calls } = queueApi([])
    const { user } = renderWithProviders(<ApprovalsQueue />, { preloadedState: signedInAs({ subject: "ada", roles: ["admin"] }) })
    expect(await screen.findByText(/Nothing waits for your roles/)).toBeInTheDocument()
    await user.selectOptions(screen.getByLabelText("Show"), "all")
    const row = await screen.findByTestId("approval-ctr_s-2")
    expect(within(row).queryByRole("button", { name: /Approve/ })).not.toBeInTheDocument()
    expect(row).toHaveTextContent("Not for your role: waits for 1 × approver and 1 × finance.")
    await user.click(screen.getByRole("button", { name: /Next/ }))
    expect(await screen.findByTestId("approval-ctr_t-2")).toBeInTheDocument()
    expect(calls.some((c) => c.url.searchParams.get("cursor") === "p2" && c.url.searchParams.get("waiting_for") === "any")).toBe(true)
  })
})
