import { apiSlice } from "../../app/api"
import type { components } from "../../api/contracts"
import { CONTRACTS_SERVICE } from "../contracts/api"

export type Party = components["schemas"]["Party"]
export type PartyType = Party["type"]

/** The most ids one `GET /parties` takes (the contracts service's bound): a page shows fewer. */
export const PARTY_IDS_MAX = 100

/** `GET /api/contracts/parties?ids=a,b`: the names of those parties the user may read (unknown ids are left out). */
export const partiesApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    getParties: build.query<Party[], string>({
      query: (ids) => `${CONTRACTS_SERVICE}/parties?ids=${encodeURIComponent(ids)}`,
      transformResponse: (page: components["schemas"]["PartyList"]) => page.items,
    }),
  }),
})

export const { useGetPartiesQuery } = partiesApi
