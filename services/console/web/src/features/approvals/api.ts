import { apiSlice } from "../../app/api"
import { CONTRACTS_SERVICE } from "../contracts/api"
import type { Page, QueueItem } from "../contracts/types"

export type { QueueItem }

export interface QueueArgs {
  /** only versions the viewer can approve now (`waiting_for=me`); else every submitted version */
  mine: boolean
  cursor: string | null
}

/** Versions per queue page. */
export const QUEUE_PAGE_SIZE = 20

/**
 * The contracts service's approvals queue (GET /approvals): submitted versions of contracts in
 * every state, oldest submission first, paged by the service. With `waiting_for=me` it applies
 * the maker-checker rules itself (never the viewer's own versions, nor those it already approved);
 * each item says whether the viewer can decide (`can_decide`) and why not.
 */
export const approvalsApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    approvalsQueue: build.query<Page<QueueItem>, QueueArgs>({
      query: ({ mine, cursor }) => {
        const q = new URLSearchParams({ waiting_for: mine ? "me" : "any", limit: String(QUEUE_PAGE_SIZE) })
        if (cursor) q.set("cursor", cursor)
        return `${CONTRACTS_SERVICE}/approvals?${q.toString()}`
      },
      providesTags: ["Approvals"],
    }),
  }),
})

export const { useApprovalsQueueQuery } = approvalsApi
