import type { User } from "../session/sessionSlice"
import { can } from "../session/sessionSlice"
import type { ContractVersion } from "./types"

type Decidable = Pick<ContractVersion, "state" | "authors" | "submitted_by" | "approvals" | "missing_approvals">

/** Maker-checker: nobody decides on a version they authored or submitted. */
export function isOwnVersion(user: User | null, v: Pick<ContractVersion, "authors" | "submitted_by">): boolean {
  if (!user) return false
  return v.authors.includes(user.subject) || v.submitted_by === user.subject
}

export function hasApproved(user: User | null, v: Pick<ContractVersion, "approvals">): boolean {
  return !!user && v.approvals.some((a) => a.approver === user.subject)
}

/** The roles a submitted version still waits for (`{finance: 1}`), those with a count left only. */
export function missingRoles(v: Pick<ContractVersion, "missing_approvals">): string[] {
  return Object.entries(v.missing_approvals).filter(([, n]) => n > 0).map(([r]) => r).sort()
}

/** "1 × finance and 1 × approver" */
export function describeMissing(v: Pick<ContractVersion, "missing_approvals">): string {
  return Object.entries(v.missing_approvals).filter(([, n]) => n > 0).map(([r, n]) => `${n} × ${r}`).join(" and ")
}

/**
 * Whether the viewer can give one of the approvals still missing, as the contracts service
 * decides it: a submitted version, not their own, not already approved by them, and one of
 * their roles among the missing ones (admin is not an approving role unless the policy names it).
 */
export function canDecide(user: User | null, v: Decidable): boolean {
  if (v.state !== "submitted" || !can.approve(user) || !user) return false
  if (isOwnVersion(user, v) || hasApproved(user, v)) return false
  const missing = missingRoles(v)
  return user.roles.some((r) => missing.includes(r))
}

/** Why the viewer has no decision button on a submitted version, in words. */
export function whyNoDecision(user: User | null, v: Decidable): string {
  const waits = describeMissing(v)
  const tail = waits ? `waits for ${waits}` : "waits for a decision"
  if (isOwnVersion(user, v)) return `Yours: another approver decides; ${tail}.`
  if (hasApproved(user, v)) return `You approved; ${tail}.`
  return `Not for your role: ${tail}.`
}

export function canEdit(user: User | null, v: ContractVersion): boolean {
  return (v.state === "draft" || v.state === "withdrawn") && v.kind !== "termination" && can.draftContracts(user)
}

/**
 * The state to show for a version: an approved version that a later approved amendment or
 * renewal replaced (already in force) is "superseded", not "approved".
 */
export function shownState(v: Pick<ContractVersion, "version" | "state" | "kind">, all: Pick<ContractVersion, "version" | "state" | "kind" | "effective_from">[], now_ms: number = Date.now()): string {
  if (v.state !== "approved" || v.kind === "termination") return v.state
  const replaced = all.some((o) => o.version > v.version && o.state === "approved" && o.kind !== "termination" &&
    new Date(o.effective_from).getTime() <= now_ms)
  return replaced ? "superseded" : v.state
}
