import type { User } from "../session/sessionSlice"
import { can } from "../session/sessionSlice"
import type { ContractVersion } from "./types"

/** Maker-checker: nobody decides on a version they authored or submitted. */
export function isOwnVersion(user: User | null, v: Pick<ContractVersion, "authors" | "submitted_by">): boolean {
  if (!user) return false
  return v.authors.includes(user.subject) || v.submitted_by === user.subject
}

export function canDecide(user: User | null, v: ContractVersion): boolean {
  return v.state === "submitted" && can.approve(user) && !isOwnVersion(user, v)
}

export function canEdit(user: User | null, v: ContractVersion): boolean {
  return (v.state === "draft" || v.state === "withdrawn") && v.kind !== "termination" && can.draftContracts(user)
}
