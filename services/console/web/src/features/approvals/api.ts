import { apiSlice } from "../../app/api"
import type { RootState } from "../../app/store"
import { CONTRACTS } from "../contracts/api"
import type { Contract, ContractVersion, Page } from "../contracts/types"
import { canDecide } from "../contracts/versionRules"

export interface QueueItem {
  contract: Contract
  version: ContractVersion
  /** the viewer can give one of the missing approvals */
  forYou: boolean
}

export interface QueueArgs {
  /** only versions one of the viewer's roles can still approve */
  mine: boolean
  cursor: string | null
}

/** Versions per queue page, and the contracts scanned at most for one page (a bound on the requests). */
export const QUEUE_PAGE_SIZE = 20
export const CONTRACT_PAGE_SIZE = 100
export const MAX_CONTRACT_PAGES_PER_QUEUE_PAGE = 10

/**
 * The contracts service has no "waiting for my role" listing, so the queue pages through every
 * contract (all states: an amendment of a scheduled contract waits too), keeps those with a
 * submitted version and reads their versions. Its cursor is the contract list's cursor, so
 * paging never skips or repeats a contract.
 */
export const approvalsApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    approvalsQueue: build.query<Page<QueueItem>, QueueArgs>({
      async queryFn({ mine, cursor }, api, _extra, baseQuery) {
        const user = (api.getState() as RootState).session.user
        const items: QueueItem[] = []
        let next: string | null = cursor
        for (let scanned = 0; scanned < MAX_CONTRACT_PAGES_PER_QUEUE_PAGE; scanned++) {
          const q = new URLSearchParams({ limit: String(CONTRACT_PAGE_SIZE) })
          if (next) q.set("cursor", next)
          const page = await baseQuery(`${CONTRACTS}?${q.toString()}`)
          if (page.error) return { error: page.error }
          const { items: contracts, next_cursor } = page.data as Page<Contract>
          const waiting = contracts.filter((c) => c.versions.some((v) => v.state === "submitted"))
          const answers = await Promise.all(waiting.map((c) => Promise.resolve(baseQuery(`${CONTRACTS}/${encodeURIComponent(c.id)}/versions`))))
          for (const [i, answer] of answers.entries()) {
            const contract = waiting[i]
            if (!contract) continue
            if (answer.error) return { error: answer.error }
            const body = answer.data as { items: ContractVersion[] } | ContractVersion[]
            for (const version of (Array.isArray(body) ? body : body.items).filter((v) => v.state === "submitted")) {
              const forYou = canDecide(user, version)
              if (!mine || forYou) items.push({ contract, version, forYou })
            }
          }
          next = next_cursor
          if (!next || items.length >= QUEUE_PAGE_SIZE) break
        }
        return { data: { items, next_cursor: next } }
      },
      providesTags: ["Approvals"],
    }),
  }),
})

export const { useApprovalsQueueQuery } = approvalsApi
