import { useEffect } from "react"
import { useAppDispatch, useAppSelector } from "../../app/hooks"
import { selectToasts, toastDismissed, type Toast } from "./toastsSlice"

/** How long a toast stays (it can be dismissed sooner). */
export const TOAST_MS = 8000

function ToastItem({ toast }: { toast: Toast }) {
  const dispatch = useAppDispatch()
  useEffect(() => {
    const timer = setTimeout(() => dispatch(toastDismissed(toast.id)), TOAST_MS)
    return () => clearTimeout(timer)
  }, [toast.id, dispatch])
  return (
    <li className="toast">
      <span>{toast.text}</span>
      <button type="button" className="link" onClick={() => dispatch(toastDismissed(toast.id))} aria-label={`Dismiss: ${toast.text}`}>
        Dismiss
      </button>
    </li>
  )
}

/**
 * Completed actions, announced: the region is always in the page (a live region added together with
 * its text is often not read out), polite, and does not take the focus from where the action put it.
 */
export function Toasts() {
  const toasts = useAppSelector(selectToasts)
  return (
    <div className="toasts" role="status" aria-live="polite" aria-label="Notifications">
      <ul>
        {toasts.map((t) => <ToastItem key={t.id} toast={t} />)}
      </ul>
    </div>
  )
}
