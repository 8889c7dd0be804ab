import { describe, expect, it } from "vitest"
import { screen, waitFor, within } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { ContractDetail } from "./ContractDetail"
import { ContractsList } from "./ContractsList"
import { NewContract } from "./NewContract"
import { cpmTemplate } from "./templates"
import type { Contract, ContractVersion } from "./types"

const contract: Contract = {
  id: "ctr_1", name: "Acme CTV Q3", contract_type: "cpm", advertiser_id: "adv-acme", partner_ids: [], currency: "USD",
  time_zone: "America/New_York", status: "pending_approval", current_version: null, revision: 2,
  created_at: "2026-11-01T10:00:00Z", created_by: "olga", terminated_at: null,
  versions: [{ version: 1, kind: "initial", state: "submitted" }],
}

const version = (over: Partial<ContractVersion> = {}): ContractVersion => ({
  contract_id: "ctr_1", version: 1, kind: "initial", state: "submitted", terms: cpmTemplate("adv-acme", new Date("2026-11-01")),
  effective_from: "2026-11-01T04:00:00Z", ends_at: null, backdated: false, committed_value: null, etag: '"e1"',
  authors: ["olga"], submitted_by: "olga", submitted_at: "2026-11-01T11:00:00Z", required_approvals: { approver: 1 },
  approvals: [], missing_approvals: { approver: 1 }, decided_at: null, decided_by: null, decision_comment: null,
  comment: null, created_at: "2026-11-01T10:00:00Z", updated_at: "2026-11-01T11:00:00Z", ...over,
})

function detailApi(v: ContractVersion) {
  return stubFetch((url, init) => {
    if (url.pathname === "/api/contracts/contracts/ctr_1") return { body: contract }
    if (url.pathname === "/api/contracts/contracts/ctr_1/versions") return { body: { items: [v] } }
    if (url.pathname === "/api/contracts/contracts/ctr_1/audit") return { body: { items: [], next_cursor: null } }
    if (url.pathname.endsWith("/approve") && init.method === "POST") return { body: { ...v, state: "approved" } }
    return undefined
  })
}

describe("contracts list", () => {
  it("lists, filters by status and pages with the cursor", async () => {
    const { calls } = stubFetch((url) =>
      url.pathname === "/api/contracts/contracts"
        ? { body: { items: [contract], next_cursor: url.searchParams.get("cursor") ? null : "c2" } }
        : undefined,
    )
    const { user } = renderWithProviders(<ContractsList />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(await screen.findByRole("link", { name: "Acme CTV Q3" })).toBeInTheDocument()
    await user.selectOptions(screen.getByLabelText("Status"), "active")
    await waitFor(() => expect(calls.at(-1)?.url.searchParams.get("status")).toBe("active"))
    await user.click(screen.getByRole("button", { name: "Next →" }))
    await waitFor(() => expect(calls.at(-1)?.url.searchParams.get("cursor")).toBe("c2"))
    expect(screen.getByRole("link", { name: "New contract" })).toBeInTheDocument()
  })

  it("gives an advertiser no write action and no advertiser filter", async () => {
    stubFetch(() => ({ body: { items: [contract], next_cursor: null } }))
    renderWithProviders(<ContractsList />, {
      preloadedState: signedInAs({ subject: "acme-user", roles: ["advertiser"], tenantType: "advertiser", tenantId: "adv-acme" }),
    })
    expect(await screen.findByRole("link", { name: "Acme CTV Q3" })).toBeInTheDocument()
    expect(screen.queryByRole("link", { name: "New contract" })).not.toBeInTheDocument()
    expect(screen.queryByLabelText("Advertiser id")).not.toBeInTheDocument()
  })

  it("shows the error when the service fails", async () => {
    stubFetch(() => ({ status: 502, body: { title: "Bad Gateway", status: 502, detail: "the contracts service is not reachable" } }))
    renderWithProviders(<ContractsList />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(await screen.findByRole("alert")).toHaveTextContent("the contracts service is not reachable")
  })
})

describe("contract editor", () => {
  it("shows the API's validation errors at their fields", async () => {
    stubFetch((url, init) =>
      url.pathname === "/api/contracts/contracts" && init.method === "POST"
        ? {
            status: 422,
            body: {
              title: "Unprocessable Content", status: 422, detail: "the request has invalid fields",
              errors: [
                { field: "terms.cpm.rate_card.bands[0].rate_cpm", message: "must be a decimal string ≥ 0" },
                { field: "name", message: "required" },
              ],
            },
          }
        : undefined,
    )
    const { user } = renderWithProviders(<NewContract />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    const rate = screen.getByLabelText("Band 1 CPM rate")
    await user.clear(rate)
    await user.type(rate, "abc")
    await user.click(screen.getByRole("button", { name: "Save draft" }))
    await waitFor(() => expect(screen.getByLabelText("Band 1 CPM rate")).toHaveAttribute("aria-invalid", "true"))
    expect(screen.getByLabelText("Band 1 CPM rate")).toHaveAccessibleDescription(/must be a decimal string ≥ 0/)
    expect(screen.getByLabelText("Contract name")).toHaveAccessibleDescription("required")
  })
})

describe("contract detail", () => {
  it("lets a different approver approve", async () => {
    const { calls } = detailApi(version())
    const { user } = renderWithProviders(<ContractDetail />, {
      route: "/contracts/ctr_1", path: "/contracts/:contractId", preloadedState: signedInAs({ subject: "arjun", roles: ["approver"] }),
    })
    await user.click(await screen.findByRole("button", { name: "Approve v1" }))
    await waitFor(() => expect(calls.some((c) => c.method === "POST" && c.url.pathname.endsWith("/versions/1/approve"))).toBe(true))
    const post = calls.find((c) => c.method === "POST")
    expect(post?.headers.get("If-Match")).toBe('"e1"')
    expect(screen.getByRole("heading", { name: "Audit trail" })).toBeInTheDocument()
  })

  it("never offers the author their own version to approve (maker-checker)", async () => {
    detailApi(version({ authors: ["ada"], submitted_by: "ada" }))
    renderWithProviders(<ContractDetail />, {
      route: "/contracts/ctr_1", path: "/contracts/:contractId", preloadedState: signedInAs({ subject: "ada", roles: ["admin"] }),
    })
    expect(await screen.findByText(/another approver must decide/)).toBeInTheDocument()
    expect(screen.queryByRole("button", { name: "Approve v1" })).not.toBeInTheDocument()
  })

  it("renders the terms readably with money in the contract currency", async () => {
    detailApi(version())
    renderWithProviders(<ContractDetail />, {
      route: "/contracts/ctr_1", path: "/contracts/:contractId",
      preloadedState: signedInAs({ subject: "acme-user", roles: ["advertiser"], tenantType: "advertiser", tenantId: "adv-acme" }),
    })
    const table = await screen.findByRole("table")
    expect(within(table).getByText(/USD\s10\.00/)).toBeInTheDocument()
    expect(screen.queryByRole("button", { name: /Approve|Submit|Amend/ })).not.toBeInTheDocument()
    expect(screen.queryByRole("heading", { name: "Audit trail" })).not.toBeInTheDocument()
  })
})
