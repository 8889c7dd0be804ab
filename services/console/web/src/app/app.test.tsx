import { describe, expect, it } from "vitest"
import { screen, waitFor } from "@testing-library/react"
import { renderWithProviders, signedInAs, stubFetch } from "../test/utils"
import { ProblemAlert } from "../components/ui"
import { App } from "./App"

describe("the app shell", () => {
  it("lands a partner on its earnings and statements, never on the spend overview the spend API refuses it", async () => {
    const { calls } = stubFetch((url) => {
      if (url.pathname === "/api/invoicing/statements") return { body: { items: [], next_cursor: null } }
      if (url.pathname === "/api/metering/v1/earnings") return { body: { items: [], count: 0 } }
      return undefined
    })
    renderWithProviders(<App />, {
      preloadedState: signedInAs({ subject: "streamly-user", roles: ["partner"], tenantType: "partner", tenantId: "ptn-streamly" }),
    })
    expect(await screen.findByRole("heading", { name: /Earnings this period/, level: 1 })).toBeInTheDocument()
    expect(await screen.findByText("No open period has earnings yet.")).toBeInTheDocument()
    expect(await screen.findByRole("heading", { name: "Payout statements", level: 1 })).toBeInTheDocument()
    expect(screen.queryByRole("link", { name: "Overview" })).not.toBeInTheDocument()
    // of metering, a partner asks only for its earnings: never the spend the spend API refuses it
    expect(calls.filter((c) => c.url.pathname.startsWith("/api/metering")).map((c) => c.url.pathname)).toEqual(
      expect.arrayContaining(["/api/metering/v1/earnings"]))
    expect(calls.some((c) => c.url.pathname.startsWith("/api/metering/v1/spend"))).toBe(false)
    // an empty list says when documents appear, and offers no dead pager
    expect(await screen.findByText("No payout statements yet.")).toBeInTheDocument()
    expect(screen.getByText(/drafted for each partner when a billing period closes/)).toBeInTheDocument()
    expect(screen.queryByRole("navigation", { name: "Pages" })).not.toBeInTheDocument()
    await waitFor(() => expect(document.title).toBe("Payout statements · Tally console"))
  })

  it("goes back to sign-in, saying why, when the services answer 401", async () => {
    stubFetch((url) => (url.pathname === "/api/contracts/contracts" ? { status: 401, body: { title: "Unauthorized", status: 401 } } : undefined))
    const { store } = renderWithProviders(<App />, { route: "/contracts", preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    expect(await screen.findByText(/session has expired or its token is no longer valid/)).toBeInTheDocument()
    expect(screen.getByRole("heading", { name: "Tally console" })).toBeInTheDocument()
    expect(store.getState().session.status).toBe("signedOut")
  })

  it("signs out a session whose token has expired", async () => {
    stubFetch(() => undefined)
    renderWithProviders(<App />, { route: "/contracts", preloadedState: signedInAs({ subject: "olga", roles: ["ops"], expiresAt: 10 }) })
    expect(await screen.findByText(/Your session has expired/)).toBeInTheDocument()
  })

  it("moves the focus to the new page's heading", async () => {
    stubFetch((url) => (url.pathname === "/api/contracts/contracts" ? { body: { items: [], next_cursor: null } } : undefined))
    renderWithProviders(<App />, { route: "/contracts", preloadedState: signedInAs({ subject: "olga", roles: ["ops"] }) })
    const heading = await screen.findByRole("heading", { name: "Contracts", level: 1 })
    await waitFor(() => expect(heading).toHaveFocus())
  })
})

describe("problems", () => {
  it("offer Retry only when asking again can help", () => {
    const retry = () => undefined
    const { rerender } = renderWithProviders(<ProblemAlert problem={{ status: 404, title: "Not Found", errors: [] }} onRetry={retry} />)
    expect(screen.queryByRole("button", { name: "Retry" })).not.toBeInTheDocument()
    rerender(<ProblemAlert problem={{ status: 502, title: "Bad Gateway", errors: [] }} onRetry={retry} />)
    expect(screen.getByRole("button", { name: "Retry" })).toBeInTheDocument()
    rerender(<ProblemAlert problem={{ status: "FETCH_ERROR", title: "The request failed", errors: [] }} onRetry={retry} />)
    expect(screen.getByRole("button", { name: "Retry" })).toBeInTheDocument()
  })
})
