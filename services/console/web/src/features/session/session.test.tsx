import { describe, expect, it } from "vitest"
import { screen } from "@testing-library/react"
import { renderWithProviders, stubFetch } from "../../test/utils"
import { SignIn } from "./SignIn"
import { decodeToken, sessionSlice, signedIn, signedOut } from "./sessionSlice"

function fakeJwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_")
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: 4_102_444_800, ...claims })}.sig`
}

describe("session slice", () => {
  it("reads roles and tenant from the token", () => {
    const user = decodeToken(fakeJwt({ sub: "acme-user", roles: ["advertiser"], tenant_type: "advertiser", tenant_id: "adv-acme" }))
    expect(user).toMatchObject({ subject: "acme-user", roles: ["advertiser"], tenantType: "advertiser", tenantId: "adv-acme" })
  })
  it("refuses expired or malformed tokens", () => {
    expect(() => decodeToken(fakeJwt({ sub: "x", roles: ["ops"], exp: 10 }))).toThrow(/expired/)
    expect(() => decodeToken("not-a-token")).toThrow(/not a JWT/)
  })
  it("signs in and out", () => {
    const token = fakeJwt({ sub: "olga", roles: ["ops"] })
    const state = sessionSlice.reducer(undefined, signedIn({ token, user: decodeToken(token) }))
    expect(state.status).toBe("signedIn")
    expect(sessionSlice.reducer(state, signedOut()).status).toBe("signedOut")
  })
})

describe("sign-in screen", () => {
  it("offers one-click demo users when demo mode is on", async () => {
    const token = fakeJwt({ sub: "arjun", roles: ["approver"] })
    stubFetch((url) =>
      url.pathname === "/api/demo/users"
        ? { body: { users: [{ subject: "arjun", name: "Arjun (approver)", roles: ["approver"], tenant_type: null, tenant_id: null, token }] } }
        : undefined,
    )
    const { user, store } = renderWithProviders(<SignIn />)
    await user.click(await screen.findByRole("button", { name: "Arjun (approver)" }))
    expect(store.getState().session.user?.subject).toBe("arjun")
  })
  it("hides demo users when the gateway has no demo mode, and explains a bad token", async () => {
    stubFetch(() => undefined)
    const { user, store } = renderWithProviders(<SignIn />)
    await user.type(screen.getByLabelText("Bearer token (JWT)"), "garbage")
    await user.click(screen.getByRole("button", { name: "Sign in" }))
    expect(await screen.findByText(/not a JWT/)).toBeInTheDocument()
    expect(screen.queryByRole("heading", { name: "Demo users" })).not.toBeInTheDocument()
    expect(store.getState().session.status).toBe("signedOut")
  })
})
