import { useMemo } from "react"
import { PARTY_IDS_MAX, useGetPartiesQuery, type PartyType } from "./api"

/** The display name of a party, or undefined when it has none (or the user may not read it). */
export type PartyNames = (type: PartyType, id: string) => string | undefined

/** The one request key of a page's ids: each once, sorted (so the same ids share one cached answer), at most the bound. */
export function partyIdsKey(ids: readonly (string | null | undefined)[]): string {
  const unique = [...new Set(ids.filter((id): id is string => typeof id === "string" && id !== ""))].sort()
  return unique.slice(0, PARTY_IDS_MAX).join(",")
}

/**
 * Names beside ids: every id a page shows, looked up in ONE `GET /api/contracts/parties?ids=` request.
 * Until it answers, or if it fails, every id is shown alone, so a page never waits on names.
 */
export function usePartyNames(ids: readonly (string | null | undefined)[]): PartyNames {
  const key = partyIdsKey(ids)
  const { data } = useGetPartiesQuery(key, { skip: key === "" })
  return useMemo(() => {
    const byKey = new Map((data ?? []).map((p) => [`${p.type}/${p.id}`, p.name]))
    return (type, id) => byKey.get(`${type}/${id}`)
  }, [data])
}

/** "Acme Corp (adv-acme)" as text (CSV, titles); the id alone when the party has no name. */
export function partyLabel(names: PartyNames, type: PartyType, id: string): string {
  const name = names(type, id)
  return name ? `${name} (${id})` : id
}

/** A party where its id is shown: the name with the id beside it in secondary text, or the id alone. */
export function PartyName({ type, id, names }: { type: PartyType; id: string; names: PartyNames }) {
  const name = names(type, id)
  if (!name) return <>{id}</>
  return (
    <>
      {name} <span className="muted">({id})</span>
    </>
  )
}
