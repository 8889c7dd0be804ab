import { spawn, type ChildProcess } from "node:child_process"
import { createHmac } from "node:crypto"
import { existsSync, readFileSync } from "node:fs"
import { dirname, resolve } from "node:path"
import { fileURLToPath } from "node:url"

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..")
export const PYTHON = existsSync(resolve(ROOT, ".venv/bin/python")) ? resolve(ROOT, ".venv/bin/python") : "python3"

export interface Stack {
  console: string
  services: Record<string, string>
  skipped: string[]
  run_id: string
  logs: string
  invoicing_topics: Record<string, string>
  stop: () => Promise<void>
}

/** Starts every service plus the console (deploy/bin/devstack.py) and resolves once all answer. */
export function startStack(): Promise<Stack> {
  const proc: ChildProcess = spawn(PYTHON, [resolve(ROOT, "deploy/bin/devstack.py"), "--fresh", "--demo", "--port", "0", "--log-dir", resolve(ROOT, ".state/logs/console-e2e")], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  })
  const stop = () =>
    new Promise<void>((done) => {
      if (proc.exitCode !== null) return done()
      proc.once("exit", () => done())
      proc.kill("SIGTERM")
    })
  return new Promise((ok, fail) => {
    let out = ""
    proc.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const line = out.split("\n").find((l) => l.startsWith("{"))
      if (line) ok({ ...(JSON.parse(line) as Omit<Stack, "stop">), stop })
    })
    proc.once("exit", (code) => fail(new Error(`the stack exited with ${code} before it was ready`)))
  })
}

/** An HS256 token from the local secret (for the ingest role, which no console user has). */
export function mintToken(sub: string, roles: string[]): string {
  const secret = process.env.TALLY_JWT_SECRET ?? readFileSync(process.env.TALLY_JWT_SECRET_FILE ?? resolve(ROOT, ".state/jwt-secret"), "utf8").trim()
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url")
  const now = Math.floor(Date.now() / 1000)
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, roles, iss: "tally-local", aud: "tally", iat: now, exp: now + 3600 })}`
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`
}

export function runPython(args: string[]): Promise<void> {
  return new Promise((ok, fail) => {
    const p = spawn(PYTHON, args, { cwd: ROOT, stdio: "inherit" })
    p.once("exit", (code) => (code === 0 ? ok() : fail(new Error(`${args.join(" ")} exited with ${code}`))))
  })
}

export interface ApiAnswer {
  status: number
  etag: string | null
  json: Record<string, unknown>
}

/**
 * The gateway's API as the demo's one-click users (their tokens from /api/demo/users, fetched once):
 * `call` answers whatever came back, `ok` throws on a status of 300 or more.
 */
export function demoApi(consoleUrl: () => string) {
  let tokens: Record<string, string> = {}
  async function tokenOf(name: string): Promise<string> {
    if (Object.keys(tokens).length === 0) {
      const resp = await fetch(`${consoleUrl()}/api/demo/users`)
      const body = (await resp.json()) as { users: { name: string; token: string }[] }
      tokens = Object.fromEntries(body.users.map((u) => [u.name, u.token]))
    }
    const token = tokens[name]
    if (!token) throw new Error(`no demo user ${name}`)
    return token
  }
  async function call(user: string, method: string, path: string, body?: unknown,
                      headers: Record<string, string> = {}): Promise<ApiAnswer> {
    const resp = await fetch(`${consoleUrl()}/api${path}`, {
      method, headers: { Authorization: `Bearer ${await tokenOf(user)}`, "Content-Type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    return { status: resp.status, etag: resp.headers.get("ETag"), json: (await resp.json()) as Record<string, unknown> }
  }
  async function ok(user: string, method: string, path: string, body?: unknown,
                    headers: Record<string, string> = {}): Promise<ApiAnswer> {
    const r = await call(user, method, path, body, headers)
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.json)}`)
    return r
  }
  return { tokenOf, call, ok }
}
