import { createSlice, type PayloadAction } from "@reduxjs/toolkit"

export type Role = "admin" | "ops" | "approver" | "finance" | "advertiser" | "partner" | "ingest"

export interface User {
  subject: string
  roles: Role[]
  tenantType: "advertiser" | "partner" | null
  tenantId: string | null
  expiresAt: number
}

export interface SessionState {
  status: "signedOut" | "signedIn"
  token: string | null
  user: User | null
  error: string | null
}

const initialState: SessionState = { status: "signedOut", token: null, user: null, error: null }

function base64UrlDecode(part: string): string {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=")
  return new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))
}

/** Reads (does not verify: the services do) the claims the console needs to shape its screens. */
export function decodeToken(token: string, nowS: number = Date.now() / 1000): User {
  const parts = token.trim().split(".")
  if (parts.length !== 3 || !parts[1]) throw new Error("this is not a JWT (three dot-separated parts)")
  let claims: Record<string, unknown>
  try {
    claims = JSON.parse(base64UrlDecode(parts[1])) as Record<string, unknown>
  } catch {
    throw new Error("the token's claims cannot be read")
  }
  if (typeof claims.sub !== "string") throw new Error("the token has no subject (sub)")
  const roles = Array.isArray(claims.roles) ? claims.roles.filter((r): r is Role => typeof r === "string") : []
  if (roles.length === 0) throw new Error("the token grants no roles")
  const exp = typeof claims.exp === "number" ? claims.exp : 0
  if (exp <= nowS) throw new Error("the token has expired")
  const tenantType = claims.tenant_type === "advertiser" || claims.tenant_type === "partner" ? claims.tenant_type : null
  return {
    subject: claims.sub,
    roles,
    tenantType,
    tenantId: typeof claims.tenant_id === "string" ? claims.tenant_id : null,
    expiresAt: exp,
  }
}

export const sessionSlice = createSlice({
  name: "session",
  initialState,
  reducers: {
    signedIn: (state, action: PayloadAction<{ token: string; user: User }>) => {
      state.status = "signedIn"
      state.token = action.payload.token
      state.user = action.payload.user
      state.error = null
    },
    signInFailed: (state, action: PayloadAction<string>) => {
      state.error = action.payload
    },
    signedOut: () => initialState,
    /** the services answered 401 (or the token's exp passed): back to sign-in, with the reason */
    sessionExpired: (_state, action: PayloadAction<string>) => ({ ...initialState, error: action.payload }),
  },
  selectors: {
    selectUser: (s) => s.user,
    selectToken: (s) => s.token,
    selectSessionError: (s) => s.error,
  },
})

export const { signedIn, signInFailed, signedOut, sessionExpired } = sessionSlice.actions
export const { selectUser, selectToken, selectSessionError } = sessionSlice.selectors

/** What the signed-in user may do; the services enforce the same rules. */
export const can = {
  isTenant: (u: User | null) => u?.tenantType != null,
  draftContracts: (u: User | null) => !!u && !u.tenantType && u.roles.some((r) => r === "ops" || r === "admin"),
  approve: (u: User | null) => !!u && !u.tenantType && u.roles.some((r) => r === "approver" || r === "finance" || r === "admin"),
  finance: (u: User | null) => !!u && !u.tenantType && u.roles.includes("finance"),
  /** metering's spend API serves operators and advertisers; partners see their statements instead */
  seeSpend: (u: User | null) => !!u && u.tenantType !== "partner" && !u.roles.every((r) => r === "partner"),
}

/** Where a user lands after sign-in and on "/": partners have no spend overview. */
export const homeOf = (u: User | null): string => (can.seeSpend(u) ? "/" : "/statements")

const STORAGE_KEY = "tally.console.token"

/** The session survives a reload of the tab (sessionStorage), not the closing of it. */
export function loadSession(storage: Storage = globalThis.sessionStorage): SessionState | undefined {
  const token = storage.getItem(STORAGE_KEY)
  if (!token) return undefined
  try {
    return { status: "signedIn", token, user: decodeToken(token), error: null }
  } catch {
    storage.removeItem(STORAGE_KEY)
    return undefined
  }
}

export function saveSession(token: string | null, storage: Storage = globalThis.sessionStorage): void {
  if (token) storage.setItem(STORAGE_KEY, token)
  else storage.removeItem(STORAGE_KEY)
}
