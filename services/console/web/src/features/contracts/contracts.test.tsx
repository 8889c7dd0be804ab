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
  authors: ["olga"], submitted_by: "olga", submitted_at: "2026-11-01T11:00:00Z", submission: 1, required_approvals: { approver: 1 },
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

  it("exports the list as filtered, every page, as CSV", async () => {
    const { calls } = stubFetch((url) =>
      url.pathname === "/api/contracts/contracts"
        ? { body: { items: [{ ...contract, name: url.searchParams.get("cursor") ? "Second, page" : contract.name }], next_cursor: url.searchParams.get("cursor") ? null : "c2" } }
        : undefined,
    )
    const saved: Blob[] = []
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: (b: Blob) => { saved.push(b); return "blob:x" }, revokeObjectURL: () => undefined }))
    const { user } = renderWithProviders(<ContractsList />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    await user.selectOptions(screen.getByLabelText("Status"), "active")
    await user.click(screen.getByRole("button", { name: "Export contracts (CSV)" }))
    await waitFor(() => expect(saved).toHaveLength(1))
    const exportCalls = calls.filter((c) => c.url.searchParams.get("limit") === "100")
    expect(exportCalls.map((c) => c.url.searchParams.get("status"))).toEqual(["active", "active"])
    const csv = await (saved[0] as Blob).text()
    expect(csv.split("\r\n")[0]).toBe("id,name,advertiser_id,contract_type,currency,time_zone,status,current_version,created_at")
    expect(csv).toContain('ctr_1,"Second, page",adv-acme,cpm,USD')
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
    // the summary takes the focus and names fields by their labels, not by API paths
    const summary = screen.getByRole("alert", { name: "2 fields need your attention" })
    expect(summary).toHaveFocus()
    expect(summary).toHaveTextContent("Band 1 rate per thousand: must be a decimal string ≥ 0")
    expect(summary).not.toHaveTextContent(/rate_card|terms\./)
  })

  it("marks required fields and offers currency and time zone pickers", () => {
    stubFetch(() => ({ body: { items: [], next_cursor: null } }))
    renderWithProviders(<NewContract />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(screen.getByLabelText("Contract name")).toHaveAttribute("aria-required", "true")
    expect(screen.getByLabelText("Campaign ids")).toHaveAttribute("aria-required", "true")
    expect(screen.getByLabelText("Purchase order reference")).not.toHaveAttribute("aria-required")
    const currency = screen.getByLabelText("Currency (ISO 4217)")
    expect(currency.tagName).toBe("SELECT")
    expect(within(currency).getByRole("option", { name: "EUR — Euro" })).toBeInTheDocument()
    expect(within(screen.getByLabelText("Time zone (IANA)")).getByRole("option", { name: "Europe/Berlin" })).toBeInTheDocument()
  })
})

describe("contract detail", () => {
  it("compares the latest two versions as soon as an amendment appears (no reload) and labels the diff", async () => {
    const v1 = version({ state: "approved", missing_approvals: {} })
    const v2 = version({ version: 2, kind: "amendment", state: "draft", effective_from: "2026-12-01T05:00:00Z" })
    let versions = [v1]
    stubFetch((url) => {
      if (url.pathname === "/api/contracts/contracts/ctr_1") return { body: contract }
      if (url.pathname === "/api/contracts/contracts/ctr_1/versions") return { body: { items: versions } }
      if (url.pathname === "/api/contracts/contracts/ctr_1/audit") return { body: { items: [] } }
      if (url.pathname === "/api/contracts/contracts/ctr_1/diff")
        return { body: { contract_id: "ctr_1", from_version: Number(url.searchParams.get("from")), to_version: Number(url.searchParams.get("to")),
          changes: [{ path: "terms.cpm.rate_card.bands[0].rate_cpm", from: "10.00", to: "13.00", change: "changed" },
            { path: "effective_from", from: "2026-11-01T04:00:00+00:00", to: "2026-12-01T05:00:00+00:00", change: "changed" }] } }
      return undefined
    })
    const { store } = renderWithProviders(<ContractDetail />, {
      route: "/contracts/ctr_1", path: "/contracts/:contractId", preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }),
    })
    expect(await screen.findByText("One version only: nothing to compare yet.")).toBeInTheDocument()
    versions = [v1, v2]
    const { contractsApi } = await import("./api")
    store.dispatch(contractsApi.util.invalidateTags([{ type: "Contract", id: "ctr_1" }]))
    const diff = await screen.findByRole("region", { name: "Differences from v1 to v2" })
    const rate = within(diff).getByRole("row", { name: /Band 1 rate per thousand/ })
    expect(rate.textContent.replace(/\u00a0/g, " ")).toMatch(/USD 10\.00→ USD 13\.00/)
    expect(within(diff).getByRole("row", { name: /Effective from/ })).toHaveTextContent("1 Dec 2026, 00:00 EST")
  })

  it("shows currency and time zone read-only in an amendment", async () => {
    const approved = version({ state: "approved", missing_approvals: {} })
    stubFetch((url) => {
      if (url.pathname === "/api/contracts/contracts/ctr_1")
        return { body: { ...contract, status: "active", current_version: 1, versions: [{ version: 1, kind: "initial", state: "approved" }] } }
      if (url.pathname === "/api/contracts/contracts/ctr_1/versions") return { body: { items: [approved] } }
      if (url.pathname === "/api/contracts/contracts/ctr_1/audit") return { body: { items: [] } }
      return undefined
    })
    const { user } = renderWithProviders(<ContractDetail />, {
      route: "/contracts/ctr_1", path: "/contracts/:contractId", preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }),
    })
    await user.click(await screen.findByRole("button", { name: "Amend…" }))
    const form = screen.getByRole("form", { name: "Amendment" })
    expect(within(form).getByLabelText("Currency (ISO 4217)")).toHaveAttribute("readonly")
    expect(within(form).getByLabelText("Time zone (IANA)")).toHaveAttribute("readonly")
    expect(within(form).getByLabelText("Effective from")).toHaveAttribute("aria-required", "true")
  })

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
