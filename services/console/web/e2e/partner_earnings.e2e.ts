/**
 * A partner's home in Debian's Chromium against the real stack (deploy/bin/devstack.py, fresh
 * databases and topics): a CPA contract naming the partner is drafted and approved through the
 * contracts API, its open period's running total (with two partners' payouts) is on the run's
 * running-totals topic, and the partner's home shows its own conversions and earnings (provisional,
 * computed at, closes) above its statements — never the advertiser's price nor the other partner.
 */
import { mkdirSync } from "node:fs"
import { resolve } from "node:path"
import { AxeBuilder } from "@axe-core/playwright"
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cpaTemplate, dayIn, flat } from "../src/features/contracts/templates"
import { demoApi, runPython, startStack, type Stack } from "./stack"

const ARTIFACTS = resolve(import.meta.dirname, "artifacts")
const CHROMIUM = process.env.TALLY_CHROMIUM ?? "/usr/bin/chromium"
const WAIT = 60_000
const ZONE = "America/New_York"
const PARTNER = "ptn-streamly"

let stack: Stack | undefined
let browser: Browser | undefined
let context: BrowserContext | undefined
let page: Page
let contractId = ""
const run = Date.now().toString(36)
const campaign = `cmp-earn-${run}`
const contractName = `E2E Acme CPA ${campaign}`
// Dates from the clock, valid on any day of the year: the flight starts yesterday in the contract's zone, and
// the period shown is this instant's month there (open: metering closes it 2 h after its end at the earliest).
const flightStart = dayIn(ZONE, new Date(Date.now() - 24 * 3600_000))
const period = dayIn(ZONE, new Date()).slice(0, 7)

function consoleUrl(): string {
  if (!stack) throw new Error("the stack did not start")
  return stack.console
}

const { call, ok } = demoApi(consoleUrl)

async function signInAs(user: string) {
  await page.goto(`${consoleUrl()}/signin`)
  await page.evaluate(() => { globalThis.sessionStorage.clear() })
  await page.goto(`${consoleUrl()}/signin`)
  await page.getByRole("button", { name: user }).click()
  await page.getByRole("navigation", { name: "Main" }).waitFor()
}

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true })
  stack = await startStack()
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  })
  context = await browser.newContext({ viewport: { width: 1440, height: 900 } })
  page = await context.newPage()
})

afterAll(async () => {
  await context?.close()
  await browser?.close()
  await stack?.stop()
})

describe("a partner's home", () => {
  it("an approved CPA contract's running total pays the partner", async () => {
    const terms = cpaTemplate("adv-acme")
    terms.common = { ...terms.common, time_zone: ZONE, flight_start: flightStart, campaign_ids: [campaign] }
    if (!terms.cpa) throw new Error("the CPA template has no cpa terms")
    terms.cpa = { ...terms.cpa, payouts: [{ event_type: "purchase", advertiser_price: flat("10.00"), partner_payout: flat("2.50"), tiers: [] }] }
    const created = await ok("Olga (operations)", "POST", "/contracts/contracts", { name: contractName, terms, partner_ids: [PARTNER] })
    contractId = String(created.json.id)
    const version = await ok("Olga (operations)", "GET", `/contracts/contracts/${contractId}/versions/1`)
    const submitted = await ok("Olga (operations)", "POST", `/contracts/contracts/${contractId}/versions/1/submit`, {},
      { "If-Match": version.etag ?? String(version.json.etag) })
    let etag = submitted.etag ?? ""
    // whichever roles the policy asks for (a flight from yesterday is backdated: finance too)
    const missing = Object.keys(submitted.json.missing_approvals ?? {})
    for (const [role, user] of [["approver", "Arjun (approver)"], ["finance", "Fiona (finance)"]] as const) {
      if (!missing.includes(role)) continue
      const approved = await ok(user, "POST", `/contracts/contracts/${contractId}/versions/1/approve`, {}, { "If-Match": etag })
      etag = approved.etag ?? etag
    }
    await expect.poll(async () => (await ok("Olga (operations)", "GET", `/contracts/contracts/${contractId}`)).json.published,
      { timeout: WAIT }).toBe(true)

    // metering's running total of the open period, with the partners' payouts (running_total v2): the stack
    // runs attribution's ingest but not its processor, so the fixture publishes what metering would
    if (!stack) throw new Error("the stack did not start")
    const topic = `e2e-${stack.run_id}-billing-running-totals`
    await runPython([resolve(import.meta.dirname, "publish_running_total.py"), topic, contractId, "adv-acme", ZONE, period,
      PARTNER, "2.50", "ptn-other", "7.25", "10.00"])
    await expect.poll(async () => {
      const r = await call("Streamly (partner)", "GET", `/metering/v1/earnings?contract_id=${contractId}&period_key=${period}`)
      const items = (r.json.items ?? []) as { amount_exact: string }[]
      return items.map((i) => i.amount_exact)
    }, { timeout: WAIT, interval: 500 }).toEqual(["2.5"])
  })

  it("shows the open period's earnings per contract, provisional, above the statements — and nothing of the advertiser's side", async () => {
    await signInAs("Streamly (partner)")
    expect(new URL(page.url()).pathname).toBe("/statements")
    const row = page.getByTestId(`earning-${contractId}-${period}`)
    await row.waitFor({ timeout: WAIT })
    await expect.poll(() => page.getByTestId(`earning-amount-${contractId}-${period}`).textContent(), { timeout: WAIT }).toMatch(/\$2\.50|USD\s2\.50/)
    const heading = page.getByRole("heading", { name: /Earnings this period/ })
    expect(await heading.textContent()).toContain("provisional")
    // above the statements
    const statements = page.getByRole("heading", { name: "Payout statements", level: 1 })
    const [earningsBox, statementsBox] = [await heading.boundingBox(), await statements.boundingBox()]
    expect(earningsBox && statementsBox && earningsBox.y < statementsBox.y).toBe(true)
    const text = (await row.textContent()) ?? ""
    expect(text).toContain(contractName)
    expect(text).toContain("purchase 1")
    // computed at and closes on, in the contract's zone, labelled
    expect(await row.locator("time").count()).toBe(2)
    expect(text).toMatch(/E[SD]T/)
    // the advertiser's price and amount (10.00, 20.00) and the other partner (7.25) appear nowhere
    const body = (await page.locator("main").textContent()) ?? ""
    expect(body).not.toMatch(/10\.00|20\.00|7\.25|ptn-other/)
    expect(await page.getByRole("alert").count()).toBe(0)
    await page.screenshot({ path: resolve(ARTIFACTS, "20-partner-earnings.png"), fullPage: true })
    const result = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze()
    expect(result.violations.filter((v) => v.impact === "critical" || v.impact === "serious").map((v) => v.id)).toEqual([])
  })

  it("is the partner's alone: an advertiser is refused earnings, and the spend it sees carries no payouts", async () => {
    const advertiser = await call("Acme Corp (advertiser)", "GET", "/metering/v1/earnings")
    expect(advertiser.status).toBe(403)
    const spend = await ok("Acme Corp (advertiser)", "GET", `/metering/v1/spend?contract_id=${contractId}`)
    const items = spend.json.items as Record<string, unknown>[]
    expect(items.length).toBeGreaterThan(0)
    expect(items.every((i) => !("payouts" in i))).toBe(true)
  })
})
