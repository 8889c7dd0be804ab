import { apiSlice } from "../../app/api"

export interface DemoUser {
  subject: string
  name: string
  roles: string[]
  tenant_type: string | null
  tenant_id: string | null
  token: string
}

/** Demo mode only: the gateway answers 404 (or 401) when it is off, and the sign-in page hides the list. */
export const sessionApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    demoUsers: build.query<{ users: DemoUser[] }, void>({ query: () => "/demo/users" }),
  }),
})

export const { useDemoUsersQuery } = sessionApi
