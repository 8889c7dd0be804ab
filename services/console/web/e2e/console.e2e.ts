/**
 * The console in Debian's Chromium (playwright-core, no browser download) against the real
 * stack: every service started by deploy/bin/devstack.py with fresh databases.
 */
import { mkdirSync, readFileSync } from "node:fs"
import { resolve } from "node:path"
import { AxeBuilder } from "@axe-core/playwright"
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cpmTemplate, dayIn } from "../src/features/contracts/templates"
import { demoApi, mintToken, runPython, startStack, type Stack } from "./stack"

const ARTIFACTS = resolve(import.meta.dirname, "artifacts")
const CHROMIUM = process.env.TALLY_CHROMIUM ?? "/usr/bin/chromium"
const WAIT = 60_000

let stack: Stack | undefined
let browser: Browser | undefined
let context: BrowserContext | undefined
let page: Page
let contractId = ""
/** the number finance gives the invoice (the tenant case searches for it as another advertiser) */
let invoiceNumber = ""
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

/** axe-core on the page as it is: no critical and no serious WCAG 2.1 A/AA violation (the ids are listed if any). */
async function expectAccessible(on: Page = page) {
  const result = await new AxeBuilder({ page: on }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze()
  const bad = result.violations
    .filter((v) => v.impact === "critical" || v.impact === "serious")
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join(", ")}`)
  expect(bad).toEqual([])
}

/** Every route has its own document title. */
async function expectTitle(title: RegExp, on: Page = page) {
  await expect.poll(() => on.title(), { timeout: WAIT }).toMatch(title)
}

/** The page is no wider than the viewport (no sideways scrolling on a phone). */
async function expectNoSidewaysScroll(on: Page) {
  const widths = await on.evaluate(() => ({ page: document.documentElement.scrollWidth, viewport: window.innerWidth }))
  expect(widths.page).toBeLessThanOrEqual(widths.viewport)
}

/** A page's check: screenshot, title, axe. */
async function check(name: string, title: RegExp) {
  await expectTitle(title)
  await shot(name)
  await expectAccessible()
}

const demo = demoApi(consoleUrl)

/** A contracts API call that must succeed: its JSON answer. */
async function api(user: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  return (await demo.ok(user, method, `/contracts${path}`, body, headers)).json
}

async function signInAs(user: string, on: Page = page) {
  await on.goto(`${consoleUrl()}/signin`)
  await on.evaluate(() => { globalThis.sessionStorage.clear() })
  await on.goto(`${consoleUrl()}/signin`)
  await on.getByRole("button", { name: user }).click()
  await on.getByRole("navigation", { name: "Main" }).waitFor()
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
    await check("01-sign-in", /^Sign in · Tally console$/)
  })

  it("serves the app compressed, hashed files cached for a year, and no source map", async () => {
    const html = await (await fetch(`${consoleUrl()}/`)).text()
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1]
    expect(script).toBeDefined()
    const asset = await fetch(`${consoleUrl()}${script ?? ""}`, { headers: { "Accept-Encoding": "gzip" } })
    expect(asset.status).toBe(200)
    expect(asset.headers.get("content-encoding")).toBe("gzip")
    expect(asset.headers.get("cache-control")).toMatch(/max-age=31536000.*immutable/)
    expect(asset.headers.get("vary")).toMatch(/Accept-Encoding/i)
    const source = await asset.text()
    expect(source).not.toMatch(/sourceMappingURL/)
    expect((await fetch(`${consoleUrl()}${script ?? ""}.map`)).status).toBe(404)
    const shell = await fetch(`${consoleUrl()}/contracts`)
    expect(shell.headers.get("cache-control")).toBe("no-cache")
  })

  it("sends an expired or invalid token back to sign-in, saying why", async () => {
    await page.goto(`${consoleUrl()}/signin`)
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url")
    const forged = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "olga", roles: ["ops"], exp: Math.floor(Date.now() / 1000) + 3600 })}.bad-signature`
    await page.evaluate((t) => { globalThis.sessionStorage.setItem("tally.console.token", t) }, forged)
    await page.goto(`${consoleUrl()}/contracts`)
    await page.getByRole("alert").filter({ hasText: /session has expired or its token is no longer valid/ }).waitFor({ timeout: WAIT })
    expect(new URL(page.url()).pathname).toBe("/signin")
    await page.getByRole("button", { name: "Olga (operations)" }).waitFor()
  })

  it("ops drafts a CPM contract, sees validation errors at their field, and submits it", async () => {
    await signInAs("Olga (operations)")
    await page.getByRole("link", { name: "Contracts" }).click()
    await check("02a-contracts", /^Contracts · Tally console$/)
    await page.getByRole("link", { name: "New contract" }).click()
    await page.getByRole("heading", { name: "New contract" }).waitFor()
    // the focus follows the route change to the new page's heading
    await expect.poll(() => page.evaluate(() => document.activeElement?.textContent)).toBe("New contract")
    await check("02b-new-contract", /^New contract · Tally console$/)
    expect(await page.getByLabel("Contract name").getAttribute("aria-required")).toBe("true")
    // pickers, not free text: ISO 4217 currencies and IANA zones
    expect(await page.getByLabel("Currency (ISO 4217)").evaluate((el) => el.tagName)).toBe("SELECT")
    await page.getByLabel("Currency (ISO 4217)").selectOption("EUR")
    await page.getByLabel("Time zone (IANA)").selectOption("Europe/Berlin")
    await page.getByLabel("Currency (ISO 4217)").selectOption("USD")
    await page.getByLabel("Time zone (IANA)").selectOption(ZONE)
    await page.getByLabel("Contract name").fill(contractName)
    await page.getByLabel("Advertiser id").fill("adv-acme")
    await page.getByLabel("Campaign ids").fill(campaign)
    await page.getByLabel("Flight start").fill(flightStart)
    await page.getByLabel("Flight end").fill(endOfYear)
    await page.getByLabel("Band 1 CPM rate").fill("twelve")
    await page.getByRole("button", { name: "Save draft" }).click()
    const rate = page.getByLabel("Band 1 CPM rate")
    await expect.poll(() => rate.getAttribute("aria-invalid"), { timeout: WAIT }).toBe("true")
    // the error summary takes the focus and speaks of fields by their labels, not API paths
    const summary = page.getByRole("alert").filter({ hasText: /need(s)? your attention/ })
    await expect.poll(() => summary.evaluate((el) => el === document.activeElement), { timeout: WAIT }).toBe(true)
    expect(await summary.textContent()).toMatch(/Band 1 rate per thousand/)
    expect(await summary.textContent()).not.toMatch(/rate_card|terms\./)
    await shot("02-editor-validation-error")
    await expectAccessible()
    await rate.fill("12.50")
    await page.getByLabel("Budget cap per period (USD)").fill("5000.00")
    await page.getByRole("button", { name: "Save draft" }).click()
    await page.getByRole("button", { name: "Submit v1 for approval" }).click()
    await page.getByText("still needed", { exact: false }).waitFor({ timeout: WAIT })
    contractId = decodeURIComponent(new URL(page.url()).pathname.split("/").at(-1) ?? "")
    expect(contractId).toMatch(/^ctr_/)
    // instants about the contract are shown in its zone, labelled
    expect(await page.getByRole("list", { name: "Versions timeline" }).textContent()).toMatch(/\d\d:\d\d E[SD]T/)
    await check("03-contract-submitted", new RegExp(`^${contractName} · Tally console$`))
  })

  it("the author cannot approve; a different approver does", async () => {
    expect(await page.getByRole("button", { name: "Approve v1" }).count()).toBe(0)
    await signInAs("Arjun (approver)")
    await page.getByRole("link", { name: "Approvals" }).click()
    const row = page.getByTestId(`approval-${contractId}-1`)
    await row.waitFor({ timeout: WAIT })
    await check("04-approvals-queue", /^Approvals · Tally console$/)
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("button", { name: "Approve v1" }).click()
    await page.getByRole("heading", { name: /Version 1\s*approved/i }).waitFor({ timeout: WAIT })
    await page.getByText("version.approved").waitFor({ timeout: WAIT })
    // after the action the focus is on what changed, and the completed action is announced (a polite live region)
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe("version-heading")
    const toasts = page.getByRole("status", { name: "Notifications" })
    await toasts.getByText("Version 1 approved.").waitFor({ timeout: WAIT })
    expect(await toasts.getAttribute("aria-live")).toBe("polite")
    await shot("05-contract-approved")
    await expectAccessible()
  })

  it("shows the advertiser's name beside its id on the contracts list once an admin names it", async () => {
    await api("Ada (admin)", "PUT", "/parties/advertiser/adv-acme", { name: "Acme Corp" })
    await signInAs("Olga (operations)")
    await page.getByRole("link", { name: "Contracts" }).click()
    await page.getByLabel("Search by name").fill(contractName)
    const cell = page.getByTestId(`advertiser-${contractId}`)
    await expect.poll(() => cell.textContent(), { timeout: WAIT }).toBe("Acme Corp (adv-acme)")
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
    // names beside ids
    await expect.poll(() => page.getByTestId(`spend-${contractId}-${period}`).textContent(), { timeout: WAIT }).toContain(contractName)
    await check("06-overview-live-spend", /^Running spend · Tally console$/)
  })

  it("a contract shows its spend history and pacing from the pacing service, and the range survives a reload", async () => {
    const period = monthIn(ZONE, eventTime)
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    const panel = page.getByRole("region", { name: "Spend history and pacing" })
    await panel.waitFor({ timeout: WAIT })
    const facts = page.getByTestId(`pacing-${contractId}-${period}`)
    // the pacing worker has read this run's running totals (metering → billing.running_totals → pacing)
    await expect.poll(async () => {
      if ((await facts.count()) === 0) await page.reload()
      return (await facts.count()) > 0 ? facts.textContent() : ""
    }, { timeout: WAIT }).toMatch(/Spend so farUSD\s10\.00/)
    expect(await page.getByTestId("cap-per-period").textContent()).toMatch(/USD\s5,000\.00/)
    expect(await page.getByTestId("cap-total").textContent()).toBe("none")
    expect(await page.getByTestId("projected-spend").textContent()).toMatch(/^USD\s[\d,]+\.\d\d$/)
    expect(await page.getByTestId("projected-cap-at").textContent()).not.toBe("")
    const chart = panel.getByRole("img", { name: /Cumulative spend per hour: \d+ hours?, up to USD\s10\.00/ })
    await chart.waitFor({ timeout: WAIT })
    // axes: money ticks and time ticks in the contract's zone
    const labels = await chart.locator("text").allTextContents()
    expect(labels.some((t) => /^USD\s0\.00$/.test(t))).toBe(true)
    expect(labels.some((t) => /^\d{1,2} [A-Z][a-z]{2}/.test(t))).toBe(true)
    const last = panel.locator("[data-testid^='series-point-']").last()
    await last.hover()
    await expect.poll(() => page.getByTestId("series-readout").textContent()).toMatch(/E[SD]T: USD\s[\d.]+ in the hour, USD\s10\.00 so far/)
    await expectAccessible()
    // the range lives in the URL, which the router updates in a transition: click, then wait for it
    await panel.getByRole("radio", { name: "Days" }).click()
    await expect.poll(() => new URL(page.url()).searchParams.get("range"), { timeout: WAIT }).toBe("day")
    await expect.poll(() => panel.getByRole("radio", { name: "Days" }).isChecked()).toBe(true)
    await page.reload()
    await panel.getByRole("img", { name: /Cumulative spend per day: \d+ days?, up to USD\s10\.00/ }).waitFor({ timeout: WAIT })
    expect(await panel.getByRole("radio", { name: "Days" }).isChecked()).toBe(true)
    await shot("06b-contract-pacing")
    await expectAccessible()
  })

  it("finance finalizes an invoice and downloads its PDF", async () => {
    expect(contractId).toMatch(/^ctr_/)
    const topic = stack?.invoicing_topics.periods_closed ?? ""
    await runPython([resolve(import.meta.dirname, "close_period.py"), topic, contractId, "adv-acme", "USD", fakeClosedMonth, "100000", "12.50"])
    await signInAs("Fiona (finance)")
    await page.getByRole("link", { name: "Invoices" }).click()
    await page.getByRole("heading", { name: "Invoices" }).waitFor()
    await expectTitle(/^Invoices · Tally console$/)
    await page.getByLabel("Period", { exact: true }).fill(fakeClosedMonth)
    const draft = page.getByRole("row").filter({ hasText: "adv-acme" }).filter({ hasText: "draft" }).first()
    await expect.poll(async () => {
      await page.getByLabel("Status").selectOption("draft")
      await page.getByLabel("Status").selectOption("")
      return draft.count()
    }, { timeout: WAIT }).toBeGreaterThan(0)
    await shot("07-invoices")
    await expectAccessible()
    await draft.getByRole("link").click()
    await page.getByTestId("invoice-total").waitFor()
    await page.getByRole("button", { name: "Finalize" }).click()
    await page.getByRole("heading", { name: /Invoice INV/ }).waitFor({ timeout: WAIT })
    await check("08-invoice-finalized", /^Invoice INV.* · Tally console$/)
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download PDF" }).click()])
    const file = resolve(ARTIFACTS, download.suggestedFilename())
    await download.saveAs(file)
    expect(download.suggestedFilename()).toMatch(/\.pdf$/)
    expect(readFileSync(file).subarray(0, 5).toString()).toBe("%PDF-")
    const number = ((await page.getByRole("heading", { name: /Invoice INV/ }).textContent()) ?? "").replace("Invoice ", "").trim()
    // the list as filtered, exported as CSV
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Invoices" }).click()
    await page.getByLabel("Period", { exact: true }).fill(fakeClosedMonth)
    const [csv] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export invoices (CSV)" }).click()])
    const csvFile = resolve(ARTIFACTS, csv.suggestedFilename())
    await csv.saveAs(csvFile)
    const text = readFileSync(csvFile, "utf8")
    expect(text.split("\r\n")[0]).toBe("id,number,advertiser_id,period_key,status,currency,total,issue_date,due_date")
    expect(text).toContain(`${number},adv-acme,${fakeClosedMonth},finalized,USD`)
    // the open period's invoice-to-be, from the running totals, marked provisional
    const preview = page.getByTestId(`preview-${contractId}-${monthIn(ZONE, eventTime)}`)
    await preview.waitFor({ timeout: WAIT })
    expect(await preview.textContent()).toMatch(/Provisional total.*USD\s10\.00/)
    expect(await preview.textContent()).toMatch(/The period ends .* E[SD]T/)
    await page.getByRole("heading", { name: /invoice preview\s*provisional/ }).waitFor()
    await expectAccessible()
    // search by invoice number: the number goes into the URL, so a reload shows the same list
    invoiceNumber = number
    await page.getByLabel("Invoice number", { exact: true }).fill(number)
    const found = page.getByRole("row").filter({ has: page.getByRole("link", { name: number, exact: true }) })
    await found.waitFor({ timeout: WAIT })
    await expect.poll(() => new URL(page.url()).searchParams.get("number"), { timeout: WAIT }).toBe(number)
    await expect.poll(() => page.locator('[data-testid^="doc-"]').count(), { timeout: WAIT }).toBe(1)
    await page.reload()
    await found.waitFor({ timeout: WAIT })
    expect(await page.getByLabel("Invoice number", { exact: true }).inputValue()).toBe(number)
    expect(await page.locator('[data-testid^="doc-"]').count()).toBe(1)
    await shot("07b-invoices-by-number")
    await expectAccessible()
  })

  it("an advertiser cannot see another advertiser's contract", async () => {
    await signInAs("Globex (advertiser)")
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("alert").filter({ hasText: "404" }).waitFor({ timeout: WAIT })
    // a permanent answer: asking again cannot help, so there is no Retry
    expect(await page.getByRole("button", { name: "Retry" }).count()).toBe(0)
    await check("09-other-tenant-not-found", /^Contract · Tally console$/)
    await page.getByRole("link", { name: "Invoices" }).click()
    await page.getByText("No invoices yet.").waitFor({ timeout: WAIT })
    await page.getByText(/drafted when a billing period closes/).waitFor()
    expect(await page.getByRole("navigation", { name: "Pages" }).count()).toBe(0)
    // another advertiser's invoice number finds nothing
    expect(invoiceNumber).toMatch(/^INV-/)
    await page.getByLabel("Invoice number", { exact: true }).fill(invoiceNumber)
    await page.getByText("No invoices match these filters.").waitFor({ timeout: WAIT })
    expect(await page.getByRole("link", { name: invoiceNumber }).count()).toBe(0)
    await page.getByRole("link", { name: "Contracts" }).click()
    await page.getByRole("heading", { name: "Contracts" }).waitFor()
    await page.getByText(/No contracts match|Name/).first().waitFor()
    expect(await page.getByRole("link", { name: contractName }).count()).toBe(0)
    await signInAs("Acme Corp (advertiser)")
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("heading", { name: contractName }).waitFor({ timeout: WAIT })
    expect(await page.getByRole("button", { name: /Approve|Submit|Amend|Terminate/ }).count()).toBe(0)
    await check("10-advertiser-own-contract", new RegExp(`^${contractName} · Tally console$`))
  })

  it("a partner lands on its statements, not on the spend overview the spend API refuses it", async () => {
    await signInAs("Streamly (partner)")
    await page.getByRole("heading", { name: "Payout statements" }).waitFor({ timeout: WAIT })
    expect(new URL(page.url()).pathname).toBe("/statements")
    expect(await page.getByRole("link", { name: "Overview" }).count()).toBe(0)
    await page.getByText("No payout statements yet.").waitFor({ timeout: WAIT })
    expect(await page.getByRole("alert").count()).toBe(0)
    expect(await page.getByRole("navigation", { name: "Pages" }).count()).toBe(0)
    await check("11-partner-home", /^Payout statements · Tally console$/)
  })

  it("an amendment shows currency and zone read-only, is compared at once, and supersedes v1 once approved", async () => {
    await signInAs("Olga (operations)")
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("button", { name: "Amend…" }).click()
    const amendment = page.getByRole("form", { name: "Amendment" })
    expect(await amendment.getByLabel("Currency (ISO 4217)").getAttribute("readonly")).not.toBeNull()
    expect(await amendment.getByLabel("Time zone (IANA)").getAttribute("readonly")).not.toBeNull()
    await amendment.getByLabel("Effective from").fill(dayIn(ZONE, new Date()))
    await amendment.getByLabel("Band 1 CPM rate").fill("13.00")
    await expectAccessible()
    const navigations: string[] = []
    const onNavigate = (f: { url: () => string }) => navigations.push(f.url())
    page.on("framenavigated", onNavigate)
    await amendment.getByRole("button", { name: "Draft amendment" }).click()
    const diff = page.getByRole("region", { name: "Differences from v1 to v2" })
    await diff.waitFor({ timeout: WAIT })
    const row = diff.getByRole("row").filter({ hasText: "Band 1 rate per thousand" })
    await expect.poll(() => row.textContent(), { timeout: WAIT }).toMatch(/USD\s12\.50.*USD\s13\.00/)
    page.off("framenavigated", onNavigate)
    expect(navigations).toEqual([])
    await page.getByRole("button", { name: "Submit v2 for approval" }).click()
    await page.getByText("still needed", { exact: false }).waitFor({ timeout: WAIT })
    await signInAs("Arjun (approver)")
    await page.goto(`${consoleUrl()}/contracts/${contractId}`)
    await page.getByRole("button", { name: "Approve v2" }).click()
    await page.getByRole("heading", { name: /Version 2\s*approved/i }).waitFor({ timeout: WAIT })
    const timeline = page.getByRole("list", { name: "Versions timeline" })
    await expect.poll(() => timeline.getByRole("listitem").first().textContent(), { timeout: WAIT }).toMatch(/superseded/i)
    await shot("12-amendment-approved")
  })

  it("the queue lists every version waiting for a role, says what is missing, and offers Approve only to who can give it", async () => {
    // a scheduled contract whose committed value needs four eyes (approver and finance)
    const terms = cpmTemplate("adv-globex")
    const nextYear = new Date().getUTCFullYear() + 1
    terms.common.flight_start = `${nextYear}-01-01`
    terms.common.flight_end = `${nextYear}-12-31`
    terms.common.campaign_ids = [`${campaign}-big`]
    if (terms.cpm) terms.cpm.budget_caps = { total: "250000.00", per_period: null }
    const big = await api("Olga (operations)", "POST", "/contracts", { name: `Globex big ${campaign}`, terms })
    const bigId = String(big.id)
    const draft = big.draft as { etag: string }
    await api("Olga (operations)", "POST", `/contracts/${bigId}/versions/1/submit`, {}, { "If-Match": draft.etag })

    // admin may look but is no approving role: no Approve button, and it says who is awaited
    await signInAs("Ada (admin)")
    await page.goto(`${consoleUrl()}/approvals`)
    await page.getByLabel("Show").selectOption("all")
    const adminRow = page.getByTestId(`approval-${bigId}-1`)
    await adminRow.waitFor({ timeout: WAIT })
    expect(await adminRow.getByRole("button", { name: /Approve/ }).count()).toBe(0)
    expect(await page.getByTestId(`missing-${bigId}-1`).textContent()).toMatch(/1 × approver and 1 × finance/)

    await signInAs("Arjun (approver)")
    await page.getByRole("link", { name: "Approvals" }).click()
    const arjunRow = page.getByTestId(`approval-${bigId}-1`)
    await arjunRow.waitFor({ timeout: WAIT })
    await arjunRow.getByRole("button", { name: /Approve v1/ }).click()
    // approved by Arjun, so gone from "waiting for my roles"; the full list says it waits for finance
    await expect.poll(() => arjunRow.count(), { timeout: WAIT }).toBe(0)
    await page.getByLabel("Show").selectOption("all")
    await expect.poll(() => arjunRow.textContent(), { timeout: WAIT }).toMatch(/You approved; waits for 1 × finance/)
    expect(await arjunRow.getByRole("button", { name: /Approve/ }).count()).toBe(0)
    await check("13-approvals-waits-for-finance", /^Approvals · Tally console$/)

    await signInAs("Fiona (finance)")
    await page.getByRole("link", { name: "Approvals" }).click()
    const fionaRow = page.getByTestId(`approval-${bigId}-1`)
    await fionaRow.waitFor({ timeout: WAIT })
    expect(await page.getByTestId(`missing-${bigId}-1`).textContent()).toMatch(/^1 × finance/)
    await fionaRow.getByRole("button", { name: /Approve v1/ }).click()
    await expect.poll(() => fionaRow.count(), { timeout: WAIT }).toBe(0)
  })

  it("no page scrolls sideways on a 390 px phone", async () => {
    const phone = await browser?.newContext({ viewport: { width: 390, height: 844 }, isMobile: true })
    if (!phone) throw new Error("no browser")
    const p = await phone.newPage()
    try {
      await p.goto(`${consoleUrl()}/signin`)
      await p.getByRole("heading", { name: "Demo users" }).waitFor()
      await expectNoSidewaysScroll(p)
      await signInAs("Olga (operations)", p)
      const pages: [string, string][] = [
        ["/", "Running spend"], ["/contracts", "Contracts"], ["/contracts/new", "New contract"],
        [`/contracts/${contractId}`, contractName], ["/approvals", "Approvals"], ["/invoices", "Invoices"], ["/statements", "Payout statements"],
      ]
      for (const [path, heading] of pages) {
        await p.goto(`${consoleUrl()}${path}`)
        await p.getByRole("heading", { name: heading, level: 1 }).waitFor({ timeout: WAIT })
        await p.screenshot({ path: resolve(ARTIFACTS, `phone${path.replace(/\//g, "-") || "-home"}.png`), fullPage: true })
        await expectNoSidewaysScroll(p)
      }
    } finally {
      await phone.close()
    }
  })
})
