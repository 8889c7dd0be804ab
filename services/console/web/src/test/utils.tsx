import type { PropsWithChildren, ReactElement } from "react"
import { render, type RenderOptions } from "@testing-library/react"
import userEvent from "@testing-library/user-event"
import { Provider } from "react-redux"
import { MemoryRouter, Route, Routes } from "react-router"
import { makeStore, type AppStore, type RootState } from "../app/store"
import type { User } from "../features/session/sessionSlice"

interface ExtendedRenderOptions extends Omit<RenderOptions, "queries"> {
  preloadedState?: Partial<RootState>
  store?: AppStore
  route?: string
  path?: string
}

/** Renders with a real store (makeStore) and a router, as the RTK templates do. */
export function renderWithProviders(ui: ReactElement, options: ExtendedRenderOptions = {}) {
  const { preloadedState = {}, store = makeStore(preloadedState), route = "/", path = "*", ...renderOptions } = options
  const Wrapper = ({ children }: PropsWithChildren) => (
    <Provider store={store}>
      <MemoryRouter initialEntries={[route]}>
        <Routes>
          <Route path={path} element={children} />
        </Routes>
      </MemoryRouter>
    </Provider>
  )
  return { store, user: userEvent.setup(), ...render(ui, { wrapper: Wrapper, ...renderOptions }) }
}

export function signedInAs(user: Partial<User> & Pick<User, "subject" | "roles">): Partial<RootState> {
  return {
    session: {
      status: "signedIn",
      token: "test-token",
      error: null,
      user: { tenantType: null, tenantId: null, expiresAt: 4_102_444_800, ...user },
    },
  }
}

type JsonHandler = (url: URL, init: RequestInit & { method: string }) => { status?: number; body: unknown } | undefined

/** A fetch stub answering JSON per URL; records every call (url, method, headers, body). */
export function stubFetch(handler: JsonHandler) {
  const calls: { url: URL; method: string; headers: Headers; body: string | null }[] = []
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : new Request(new URL(String(input), "http://localhost"), init)
    const url = new URL(req.url, "http://localhost")
    const body = req.method === "GET" ? null : await req.clone().text()
    calls.push({ url, method: req.method, headers: req.headers, body })
    const answer = handler(url, { method: req.method, body })
    if (!answer) return new Response(JSON.stringify({ title: "Not Found", status: 404 }), { status: 404, headers: { "Content-Type": "application/problem+json" } })
    const status = answer.status ?? 200
    const type = status >= 400 ? "application/problem+json" : "application/json"
    return new Response(JSON.stringify(answer.body), { status, headers: { "Content-Type": type } })
  })
  vi.stubGlobal("fetch", fn)
  return { calls, fn }
}
