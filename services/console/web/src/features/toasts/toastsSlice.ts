import { createListenerMiddleware, createSlice, type PayloadAction, type UnknownAction } from "@reduxjs/toolkit"

export interface Toast {
  id: number
  text: string
}

interface ToastsState {
  items: Toast[]
  nextId: number
}

/** At most this many toasts at once (the oldest goes first). */
export const MAX_TOASTS = 3

const initialState: ToastsState = { items: [], nextId: 1 }

export const toastsSlice = createSlice({
  name: "toasts",
  initialState,
  reducers: {
    toastShown: (state, action: PayloadAction<string>) => {
      state.items.push({ id: state.nextId, text: action.payload })
      state.nextId += 1
      if (state.items.length > MAX_TOASTS) state.items.splice(0, state.items.length - MAX_TOASTS)
    },
    toastDismissed: (state, action: PayloadAction<number>) => {
      state.items = state.items.filter((t) => t.id !== action.payload)
    },
  },
  selectors: { selectToasts: (s) => s.items },
})

export const { toastShown, toastDismissed } = toastsSlice.actions
export const { selectToasts } = toastsSlice.selectors

type Args = Record<string, unknown> & { version?: number; action?: string }
type Result = Record<string, unknown> & { version?: number; name?: string; number?: string | null; awaiting?: string; state?: string }

const DONE: Record<string, string> = { approve: "approved", reject: "rejected", submit: "submitted for approval", withdraw: "withdrawn" }
const DOC_DONE: Record<string, string> = { finalize: "finalized", send: "sent", "mark-paid": "marked paid", void: "voided" }

/** What to say once a write succeeded (null: nothing worth a toast). Pure, so it is tested alone. */
export function toastFor(endpoint: string, args: Args, result: Result): string | null {
  switch (endpoint) {
    case "draftContract":
      return `Draft saved: ${result.name ?? "the contract"}.`
    case "editVersion":
      return `Version ${String(args.version ?? result.version ?? "")} saved.`
    case "versionAction": {
      const v = `Version ${String(args.version ?? "")}`
      if (args.action === "approve" && result.state === "submitted") return `${v}: your approval is recorded; other approvals are still needed.`
      return `${v} ${DONE[String(args.action)] ?? "updated"}.`
    }
    case "amendContract":
      return `Amendment drafted as version ${String(result.version ?? "")}.`
    case "renewContract":
      return `Renewal drafted as version ${String(result.version ?? "")}.`
    case "terminateContract":
      return `Termination drafted as version ${String(result.version ?? "")}: submit it for approval.`
    case "invoiceAction":
    case "statementAction": {
      const what = endpoint === "invoiceAction" ? "Invoice" : "Payout statement"
      if (args.action === "finalize" && result.awaiting) return `${what} prepared: ${result.awaiting}.`
      return `${what}${result.number ? ` ${result.number}` : ""} ${DOC_DONE[String(args.action)] ?? "updated"}.`
    }
    default:
      return null
  }
}

interface MutationFulfilled extends UnknownAction {
  payload: Result
  meta: { arg: { type: "mutation"; endpointName: string; originalArgs: Args } }
}

function isMutationFulfilled(action: UnknownAction): action is MutationFulfilled {
  const meta = (action as { meta?: { arg?: { type?: string }; requestStatus?: string } }).meta
  return meta?.requestStatus === "fulfilled" && meta.arg?.type === "mutation"
}

/** Every completed write of the api slice is announced with a toast (the toasts region is aria-live). */
export const toastListener = createListenerMiddleware()
toastListener.startListening({
  predicate: (action) => isMutationFulfilled(action),
  effect: (action, api) => {
    if (!isMutationFulfilled(action)) return
    const text = toastFor(action.meta.arg.endpointName, action.meta.arg.originalArgs, action.payload)
    if (text) api.dispatch(toastShown(text))
  },
})
