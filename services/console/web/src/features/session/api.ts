import { apiSlice } from "../../app/api"
import type { components } from "../../api/console"

/** The gateway's own document (tally_console/openapi_spec.py), generated into src/api/console.ts. */
export type DemoUser = components["schemas"]["DemoUser"]
type DemoUsers = components["schemas"]["DemoUsers"]

/** Demo mode only: the gateway answers 404 (or 401) when it is off, and the sign-in page hides the list. */
export const sessionApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    demoUsers: build.query<DemoUsers, void>({ query: () => "/demo/users" }),
  }),
})

export const { useDemoUsersQuery } = sessionApi
