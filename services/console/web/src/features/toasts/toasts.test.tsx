import { describe, expect, it } from "vitest"
import { act, screen, within } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../../test/utils"
import { contractsApi } from "../contracts/api"
import { MAX_TOASTS, toastFor, toastShown, toastsSlice } from "./toastsSlice"
import { Toasts } from "./Toasts"

describe("toast wording", () => {
  it("says what completed, in words", () => {
    expect(toastFor("versionAction", { version: 2, action: "submit" }, {})).toBe("Version 2 submitted for approval.")
    expect(toastFor("versionAction", { version: 1, action: "approve" }, { state: "approved" })).toBe("Version 1 approved.")
    expect(toastFor("versionAction", { version: 1, action: "approve" }, { state: "submitted" })).toMatch(/other approvals are still needed/)
    expect(toastFor("invoiceAction", { action: "finalize" }, { number: "INV-2026-000001" })).toBe("Invoice INV-2026-000001 finalized.")
    expect(toastFor("invoiceAction", { action: "finalize" }, { awaiting: "a second finance user must finalize" })).toMatch(/^Invoice prepared: a second/)
    expect(toastFor("amendContract", {}, { version: 3 })).toBe("Amendment drafted as version 3.")
    expect(toastFor("getContract", {}, {})).toBeNull()
  })
  it("keeps at most a few at once, the newest", () => {
    let state = toastsSlice.reducer(undefined, toastShown("one"))
    for (const t of ["two", "three", "four"]) state = toastsSlice.reducer(state, toastShown(t))
    expect(state.items.map((t) => t.text)).toEqual(["two", "three", "four"].slice(-MAX_TOASTS))
  })
})

describe("toasts region", () => {
  it("announces a completed action politely and lets it be dismissed", async () => {
    const { store, user } = renderWithProviders(<Toasts />, { preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    const region = screen.getByRole("status", { name: "Notifications" })
    expect(region).toHaveAttribute("aria-live", "polite")
    stubFetch((url, init) => init.method === "POST" && url.pathname.endsWith("/versions/1/submit")
      ? { body: { contract_id: "ctr_1", version: 1, state: "submitted" } } : undefined)
    await act(async () => {
      await store.dispatch(contractsApi.endpoints.versionAction.initiate({ contractId: "ctr_1", version: 1, action: "submit", etag: "e1" }))
    })
    expect(within(region).getByText("Version 1 submitted for approval.")).toBeInTheDocument()
    await user.click(screen.getByRole("button", { name: /Dismiss: Version 1 submitted/ }))
    expect(within(region).queryByText("Version 1 submitted for approval.")).not.toBeInTheDocument()
  })
})
