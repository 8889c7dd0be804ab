/**
 * The console in Debian's Chromium (playwright-core, no browser download) against the real
 * stack: every service started by tally_console.devstack with fresh databases.
 */
import { mkdirSync, readFileSync } from "node:fs"
import { resolve } from "node:path"
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dayIn } from "../src/features/contracts/templates"
import { mintToken, runPython, startStack, type Stack } from "./stack"

const ARTIFACTS = resolve(import.meta.dirname, "artifacts")
const CHROMIUM = process.env.TALLY_CHROMIUM ?? "/usr/bin/chromium"
const WAIT = 60_000

let stack: Stack | undefined
let browser: Browser | undefined
let context: BrowserContext | undefined
let page: Page
let contractId = ""
const campaign = `cmp-e2e-${Date.now().toString(36)}`
const contractName = `E2E Acme CPM ${campaign}`

// Dates come from the clock, so they are chosen to hold on every day of the year (month ends, 29 Feb,
// 31 Dec, DST days): the flight starts on the 1st of the previous UTC month, so on almost every day the
// contract spans a past period and the current one, and the overview must tell its rows apart by period. The events
// carry one event time, fixed once, and the row checked is that instant's period in the contract's zone
// (America/New_York, the form's default); metering closes a period only 2 h after its end, far beyond
// this test. The period published as closed by the test lies before the flight, so metering never
// closes the same period itself.
const ZONE = "America/New_York"
const utcMonthStart = (monthsBack: number, from = new Date()) =>
  new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth() - monthsBack, 1))
const isoDay = (d: Date) => d.toISOString().slice(0, 10)
const flightStart = isoDay(utcMonthStart(1))
const endOfYear = `${new Date().getUTCFullYear() + 1}-12-31`
const fakeClosedMonth = utcMonthStart(2).toISOString().slice(0, 7)
const eventTime = new Date(Date.now() - 60_000)

/** The billing period (calendar month) of an instant in a time zone, as metering keys it: YYYY-MM. */
const monthIn = (zone: string, at: Date): string => dayIn(zone, at).slice(0, 7)

function consoleUrl(): string {
  if (!stack) throw new Error("the stack did not start")
  return stack.console
}

async function shot(name: string) {
  await page.screenshot({ path: resolve(ARTIFACTS, `${name}.png`), fullPage: true })
}

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
  const b = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  })
  // a fresh profile per run: the context is a new, empty user data dir
  browser = b
  const ctx = await b.newContext({ viewport: { width: 1366, height: 860 }, acceptDownloads: true })
  context = ctx
  page = await ctx.newPage()
}, 180_000)

afterAll(async () => {
  await context?.close()
  await browser?.close()
  await stack?.stop()
})

describe("the console against the real stack", () => {
  it("signs in with one-click demo users", async () => {
    expect(stack?.skipped).toEqual([])
    await page.goto(`${consoleUrl()}/`)
    await page.getByRole("heading", { name: "Demo users" }).waitFor()
    await shot("01-sign-in")
  })

  it("ops drafts a CPM contract, sees validation errors at their field, and submits it", async () => {
    await signInAs("Olga (operations)")
    await page.getByRole("link", { name: "Contracts" }).click()
    await page.getByRole("link", { name: "New contract" }).click()
    await page.getByLabel("Contract name").fill(contractName)
    await page.getByLabel("Advertiser id").fill("adv-acme")
    await page.getByLabel("Campaign ids").fill(campaign)
    await page.getByLabel("Flight start").fill(flightStart)
    await page.getByLabel("Flight end").fill(endOfYear)
    await page.getByLabel("Band 1 CPM rate").fill("twelve")
    await page.getByRole("button", { name: "Save draft" }).click()
    const rate = page.getByLabel("Band 1 CPM rate")
    await expect.poll(() => rate.getAttribute("aria-invalid"), { timeout: WAIT }).toBe("true")
    await shot("02-editor-validation-error")
    await rate.fill("12.50")
    await page.getByLabel("Budget cap per period (USD)").fill("5000.00")
    await page.getByRole("button", { name: "Save draft" }).click()
    await page.getByRole("button", { name: "Submit v1 for approval" }).click()
    await page.getByText("still needed", { exact: false }).waitFor({ timeout: WAIT })
    contractId = decodeURIComponent(new URL(page.url()).pathname.split("/").at(-1) ?? "")
    expect(contractId).toMatch(/^ctr_/)
    await shot("03-contract-submitted")
  })

  it("the author cannot approve; a different approver does", async () => {
    expect(await page.getByRole("button", { name: "Approve v1" }).count()).toBe(0)
    await signInAs("Arjun (approver)")
    await page.getByRole("link", { name: "Approvals" }).click()
    const row = page.getByTestId(`approval-${contractId}-1`)
    await row.waitFor({ timeout: WAIT })
    await shot("04-approvals-queue")
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("button", { name: "Approve v1" }).click()
    await page.getByRole("heading", { name: /Version 1\s*approved/i }).waitFor({ timeout: WAIT })
    await page.getByText("version.approved").waitFor({ timeout: WAIT })
    await shot("05-contract-approved")
  })

  it("the overview's spend rises as impressions arrive, without a reload", async () => {
    await signInAs("Olga (operations)")
    await page.getByText("● Live").waitFor({ timeout: WAIT })
    const ingest = `Bearer ${mintToken("e2e-adserver", ["ingest"])}`
    const send = async (n: number, offset: number) => {
      const at = eventTime.toISOString()
      const events = Array.from({ length: n }, (_, i) => ({
        impression_id: `${campaign}-imp-${offset + i}`, event_time: at, advertiser_id: "adv-acme", campaign_id: campaign,
        partner_id: null, household_id: `hh-${offset + i}`, device_type: "ctv", ivt: "none", measurement_source: "first_party",
      }))
      const resp = await fetch(`${consoleUrl()}/api/attribution/v1/impressions`, {
        method: "POST", headers: { Authorization: ingest, "Content-Type": "application/json" }, body: JSON.stringify(events),
      })
      expect(resp.status).toBeLessThan(300)
    }
    const period = monthIn(ZONE, eventTime)
    const amount = page.getByTestId(`spend-amount-${contractId}-${period}`)
    await send(400, 0)
    await amount.waitFor({ timeout: WAIT })
    await expect.poll(() => amount.textContent(), { timeout: WAIT }).toMatch(/USD\s5\.00/)
    const navigations: string[] = []
    page.on("framenavigated", (f) => navigations.push(f.url()))
    await send(400, 400)
    await expect.poll(() => amount.textContent(), { timeout: WAIT }).toMatch(/USD\s10\.00/)
    expect(navigations).toEqual([])
    await shot("06-overview-live-spend")
  })

  it("finance finalizes an invoice and downloads its PDF", async () => {
    expect(contractId).toMatch(/^ctr_/)
    const topic = stack?.invoicing_topics.periods_closed ?? ""
    await runPython([resolve(import.meta.dirname, "close_period.py"), topic, contractId, "adv-acme", "USD", fakeClosedMonth, "100000", "12.50"])
    await signInAs("Fiona (finance)")
    await page.getByRole("link", { name: "Invoices" }).click()
    await page.getByLabel("Period").fill(fakeClosedMonth)
    const draft = page.getByRole("row").filter({ hasText: "adv-acme" }).filter({ hasText: "draft" }).first()
    await expect.poll(async () => {
      await page.getByLabel("Status").selectOption("draft")
      await page.getByLabel("Status").selectOption("")
      return draft.count()
    }, { timeout: WAIT }).toBeGreaterThan(0)
    await shot("07-invoices")
    await draft.getByRole("link").click()
    await page.getByTestId("invoice-total").waitFor()
    await page.getByRole("button", { name: "Finalize" }).click()
    await page.getByRole("heading", { name: /Invoice INV/ }).waitFor({ timeout: WAIT })
    await shot("08-invoice-finalized")
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download PDF" }).click()])
    const file = resolve(ARTIFACTS, download.suggestedFilename())
    await download.saveAs(file)
    expect(download.suggestedFilename()).toMatch(/\.pdf$/)
    expect(readFileSync(file).subarray(0, 5).toString()).toBe("%PDF-")
  })

  it("an advertiser cannot see another advertiser's contract", async () => {
    await signInAs("Globex (advertiser)")
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("alert").filter({ hasText: "404" }).waitFor({ timeout: WAIT })
    await shot("09-other-tenant-not-found")
    await page.getByRole("link", { name: "Contracts" }).click()
    await page.getByRole("heading", { name: "Contracts" }).waitFor()
    await page.getByText(/No contracts match|Name/).first().waitFor()
    expect(await page.getByRole("link", { name: contractName }).count()).toBe(0)
    await signInAs("Acme Corp (advertiser)")
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("heading", { name: contractName }).waitFor({ timeout: WAIT })
    expect(await page.getByRole("button", { name: /Approve|Submit|Amend|Terminate/ }).count()).toBe(0)
    await shot("10-advertiser-own-contract")
  })
})
