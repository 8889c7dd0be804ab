import { NavLink, Navigate, Outlet, Route, Routes } from "react-router"
import { useAppDispatch, useAppSelector } from "./hooks"
import { apiSlice } from "./api"
import { can, saveSession, selectUser, signedOut } from "../features/session/sessionSlice"
import { SignIn } from "../features/session/SignIn"
import { Overview } from "../features/overview/Overview"
import { ContractsList } from "../features/contracts/ContractsList"
import { ContractDetail } from "../features/contracts/ContractDetail"
import { NewContract } from "../features/contracts/NewContract"
import { ApprovalsQueue } from "../features/approvals/ApprovalsQueue"
import { InvoicesList, StatementsList } from "../features/invoices/DocumentsList"
import { InvoiceDetail, StatementDetail } from "../features/invoices/DocumentDetail"

function Layout() {
  const user = useAppSelector(selectUser)
  const dispatch = useAppDispatch()
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
          <NavLink to="/" end>
            Overview
          </NavLink>
          <NavLink to="/contracts">Contracts</NavLink>
          {can.approve(user) && <NavLink to="/approvals">Approvals</NavLink>}
          {seesInvoices && <NavLink to="/invoices">Invoices</NavLink>}
          {seesStatements && <NavLink to="/statements">Payout statements</NavLink>}
        </nav>
        <div className="who">
          <span aria-label="Signed in as">
            {user.subject} · {user.roles.join(", ")}
            {user.tenantId ? ` · ${user.tenantId}` : ""}
          </span>
          <button type="button" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  )
}

export function App() {
  return (
    <Routes>
      <Route path="/signin" element={<SignIn />} />
      <Route element={<Layout />}>
        <Route index element={<Overview />} />
        <Route path="contracts" element={<ContractsList />} />
        <Route path="contracts/new" element={<NewContract />} />
        <Route path="contracts/:contractId" element={<ContractDetail />} />
        <Route path="approvals" element={<ApprovalsQueue />} />
        <Route path="invoices" element={<InvoicesList />} />
        <Route path="invoices/:id" element={<InvoiceDetail />} />
        <Route path="statements" element={<StatementsList />} />
        <Route path="statements/:id" element={<StatementDetail />} />
        <Route path="*" element={<p>There is no such page.</p>} />
      </Route>
    </Routes>
  )
}
