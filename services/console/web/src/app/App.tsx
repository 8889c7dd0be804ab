import { lazy, Suspense, useEffect } from "react"
import { NavLink, Navigate, Outlet, Route, Routes, useLocation } from "react-router"
import { useAppDispatch, useAppSelector } from "./hooks"
import { apiSlice } from "./api"
import { Loading, usePageTitle } from "../components/ui"
import { can, homeOf, saveSession, selectUser, sessionExpired, signedOut } from "../features/session/sessionSlice"
import { SignIn } from "../features/session/SignIn"
import { Toasts } from "../features/toasts/Toasts"
import { Overview } from "../features/overview/Overview"
import { ContractsList } from "../features/contracts/ContractsList"
import { PartnerEarnings } from "../features/earnings/PartnerEarnings"

// one chunk per route family, loaded on first visit: the sign-in, overview and contracts list stay in the
// entry chunk (every role's first screen); the contract page (pacing chart, editor), the new-contract form,
// approvals and invoices come when they are opened
const ContractDetail = lazy(() => import("../features/contracts/ContractDetail").then((m) => ({ default: m.ContractDetail })))
const NewContract = lazy(() => import("../features/contracts/NewContract").then((m) => ({ default: m.NewContract })))
const ApprovalsQueue = lazy(() => import("../features/approvals/ApprovalsQueue").then((m) => ({ default: m.ApprovalsQueue })))
const InvoicesList = lazy(() => import("../features/invoices/DocumentsList").then((m) => ({ default: m.InvoicesList })))
const StatementsList = lazy(() => import("../features/invoices/DocumentsList").then((m) => ({ default: m.StatementsList })))
const InvoiceDetail = lazy(() => import("../features/invoices/DocumentDetail").then((m) => ({ default: m.InvoiceDetail })))
const StatementDetail = lazy(() => import("../features/invoices/DocumentDetail").then((m) => ({ default: m.StatementDetail })))

/**
 * After a route change the keyboard and screen-reader focus moves to the new page: its heading, else
 * main — and, when the page's chunk is still loading, to its heading as soon as it is rendered.
 */
function useFocusOnRouteChange() {
  const { pathname } = useLocation()
  useEffect(() => {
    const main = document.getElementById("main")
    if (!main) return
    const focusHeading = (): boolean => {
      const heading = main.querySelector<HTMLElement>("h1")
      if (!heading) return false
      if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1")
      heading.focus()
      return true
    }
    if (focusHeading()) return
    main.focus()
    const watch = new MutationObserver(() => { if (focusHeading()) watch.disconnect() })
    watch.observe(main, { childList: true, subtree: true })
    const stop = setTimeout(() => watch.disconnect(), 10_000)
    return () => { watch.disconnect(); clearTimeout(stop) }
  }, [pathname])
}

function NotFound() {
  usePageTitle("No such page")
  return <h1>There is no such page.</h1>
}

/** "/" is the spend overview, except for partners (the spend API refuses them): they land on their statements. */
function Home() {
  const user = useAppSelector(selectUser)
  if (!can.seeSpend(user)) return <Navigate to={homeOf(user)} replace />
  return <Overview />
}

/**
 * The payout statements; for a partner (whose home this is) the open period's earnings per contract,
 * provisional, above them.
 */
function Statements() {
  const user = useAppSelector(selectUser)
  return (
    <>
      {user?.tenantType === "partner" && <PartnerEarnings />}
      <Suspense fallback={<Loading what="the payout statements" />}>
        <StatementsList />
      </Suspense>
    </>
  )
}

function Layout() {
  const user = useAppSelector(selectUser)
  const dispatch = useAppDispatch()
  useFocusOnRouteChange()
  const expiresAt = user?.expiresAt
  useEffect(() => {
    if (expiresAt === undefined) return
    const expire = () => {
      saveSession(null)
      dispatch(apiSlice.util.resetApiState())
      dispatch(sessionExpired("Your session has expired: sign in again."))
    }
    const left_ms = expiresAt * 1000 - Date.now()
    if (left_ms <= 0) {
      expire()
      return
    }
    // setTimeout holds at most ~24.8 days; a longer token is checked again on the next render
    const timer = setTimeout(expire, Math.min(left_ms, 2 ** 31 - 1))
    return () => clearTimeout(timer)
  }, [expiresAt, dispatch])
  if (!user) return <Navigate to="/signin" replace />
  const signOut = () => {
    saveSession(null)
    dispatch(signedOut())
    dispatch(apiSlice.util.resetApiState())
  }
  const seesInvoices = user.tenantType !== "partner"
  const seesStatements = user.tenantType !== "advertiser"
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">Tally</span>
        <nav aria-label="Main">
          {can.seeSpend(user) && (
            <NavLink to="/" end>
              Overview
            </NavLink>
          )}
          <NavLink to="/contracts">Contracts</NavLink>
          {can.approve(user) && <NavLink to="/approvals">Approvals</NavLink>}
          {seesInvoices && <NavLink to="/invoices">Invoices</NavLink>}
          {seesStatements && <NavLink to="/statements">Payout statements</NavLink>}
        </nav>
        <div className="who">
          <span>
            <span className="sr-only">Signed in as </span>
            {user.subject} · {user.roles.join(", ")}
            {user.tenantId ? ` · ${user.tenantId}` : ""}
          </span>
          <button type="button" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<Loading what="the page" />}>
          <Outlet />
        </Suspense>
      </main>
      <Toasts />
    </div>
  )
}

export function App() {
  return (
    <Routes>
      <Route path="/signin" element={<SignIn />} />
      <Route element={<Layout />}>
        <Route index element={<Home />} />
        <Route path="contracts" element={<ContractsList />} />
        <Route path="contracts/new" element={<NewContract />} />
        <Route path="contracts/:contractId" element={<ContractDetail />} />
        <Route path="approvals" element={<ApprovalsQueue />} />
        <Route path="invoices" element={<InvoicesList />} />
        <Route path="invoices/:id" element={<InvoiceDetail />} />
        <Route path="statements" element={<Statements />} />
        <Route path="statements/:id" element={<StatementDetail />} />
        <Route path="*" element={<NotFound />} />
      </Route>
    </Routes>
  )
}
