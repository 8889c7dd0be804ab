import { useState, type FormEvent } from "react"
import { useNavigate } from "react-router"
import { useAppDispatch, useAppSelector } from "../../app/hooks"
import { Field, usePageTitle } from "../../components/ui"
import { useDemoUsersQuery } from "./api"
import { decodeToken, homeOf, saveSession, selectSessionError, signedIn, signInFailed } from "./sessionSlice"

export function SignIn() {
  const dispatch = useAppDispatch()
  const navigate = useNavigate()
  const error = useAppSelector(selectSessionError)
  const [token, setToken] = useState("")
  const demo = useDemoUsersQuery()
  usePageTitle("Sign in")

  const signInWith = (raw: string) => {
    try {
      const user = decodeToken(raw)
      saveSession(raw.trim())
      dispatch(signedIn({ token: raw.trim(), user }))
      void navigate(homeOf(user))
    } catch (e) {
      dispatch(signInFailed((e as Error).message))
    }
  }

  const onSubmit = (e: FormEvent) => {
    e.preventDefault()
    signInWith(token)
  }

  return (
    <main className="signin">
      <h1>Tally console</h1>
      {error && (
        <p className="alert alert-error" role="alert">
          {error}
        </p>
      )}
      <section aria-labelledby="token-heading" className="card">
        <h2 id="token-heading">Sign in with a token</h2>
        <form onSubmit={onSubmit}>
          <Field label="Bearer token (JWT)" hint="Paste the token your identity provider issued." required>
            {(p) => (
              <textarea {...p} rows={4} value={token} onChange={(e) => setToken(e.target.value)} spellCheck={false} required />
            )}
          </Field>
          <button type="submit" className="primary">
            Sign in
          </button>
        </form>
      </section>
      {demo.isSuccess && (
        <section aria-labelledby="demo-heading" className="card">
          <h2 id="demo-heading">Demo users</h2>
          <p className="hint">Demo mode is on: sign in as a local user with one click.</p>
          <ul className="demo-users">
            {demo.data.users.map((u) => (
              <li key={u.subject}>
                <button type="button" onClick={() => signInWith(u.token)}>
                  {u.name}
                </button>
              </li>
            ))}
          </ul>
        </section>
      )}
    </main>
  )
}
