import { describe, expect, it } from "vitest"
import { addDecimals, compareDecimals, fromScaled, ratioBasisPoints, scaleToPixels, toScaled } from "./decimal"
import { formatMoney as fmt, minorUnits } from "./money"

// Intl puts a no-break space between the code and the amount
const formatMoney = (a: string | null, c: string) => fmt(a, c).replace(/\u00a0/g, " ")
import { fieldErrors, normalizeField, toProblem } from "./problems"
import { parseEvents } from "./sse"

describe("decimal strings", () => {
  it("add exactly where floats would not", () => {
    expect(addDecimals("0.1", "0.2")).toBe("0.3")
    expect(addDecimals("12.500000000000", "-0.5")).toBe("12")
    expect(fromScaled(toScaled("-0.000000000001"))).toBe("-0.000000000001")
  })
  it("compare and scale", () => {
    expect(compareDecimals("10.00", "9.999")).toBe(1)
    expect(ratioBasisPoints("80", "100")).toBe(8000)
    expect(ratioBasisPoints("1", "0")).toBeNull()
    expect(scaleToPixels("50", "200", 100)).toBe(25)
  })
  it("refuse what is not a decimal string", () => {
    expect(() => toScaled("1e3")).toThrow()
    expect(() => toScaled("abc")).toThrow()
  })
})

describe("money", () => {
  it("uses the currency's minor units", () => {
    expect(minorUnits("USD")).toBe(2)
    expect(minorUnits("JPY")).toBe(0)
    expect(minorUnits("BHD")).toBe(3)
    expect(formatMoney("1234.5", "USD")).toBe("USD 1,234.50")
    expect(formatMoney("1500", "JPY")).toBe("JPY 1,500")
    expect(formatMoney("0.125", "BHD")).toBe("BHD 0.125")
  })
  it("formats the decimal string itself, half-even, beyond float precision", () => {
    expect(formatMoney("90071992547409.925", "USD")).toBe("USD 90,071,992,547,409.92")
    expect(formatMoney("0.015", "USD")).toBe("USD 0.02")
    expect(formatMoney(null, "USD")).toBe("—")
  })
})

describe("problems", () => {
  it("map API field paths to editor keys", () => {
    expect(normalizeField("terms.cpm.rate_card.bands[0].rate_cpm")).toBe("cpm.rate_card.bands.0.rate_cpm")
    const p = toProblem({
      status: 422,
      data: { title: "Unprocessable Content", detail: "invalid", errors: [{ field: "terms.common.currency", message: "unknown currency 'USX'" }] },
    })
    expect(p?.status).toBe(422)
    expect(fieldErrors(p)).toEqual({ "common.currency": "unknown currency 'USX'" })
  })
  it("describe network failures", () => {
    expect(toProblem({ status: "FETCH_ERROR", error: "TypeError: failed" })?.detail).toBe("TypeError: failed")
  })
})

describe("server-sent events", () => {
  it("parse complete events and keep the partial rest", () => {
    const { events, rest } = parseEvents('event: total\nid: c/1\ndata: {"a":1}\n\n: ping\n\nevent: total\ndata: {"a"')
    expect(events).toEqual([{ event: "total", id: "c/1", data: '{"a":1}' }])
    expect(rest).toBe('event: total\ndata: {"a"')
  })
})

describe("percent and time for display", () => {
  it("floors the burn so it never shows a threshold the spend has not reached", async () => {
    const { formatPercent } = await import("./money")
    expect(formatPercent(ratioBasisPoints("24.99975", "25.00"))).toBe("99.9 %")
    expect(formatPercent(10_000)).toBe("100.0 %")
    expect(formatPercent(8_550)).toBe("85.5 %")
    expect(formatPercent(5)).toBe("0.0 %")
  })
  it("shows an instant in the contract's zone, labelled, whatever the viewer's zone", async () => {
    const { formatDateTime, formatDate } = await import("./money")
    // a New York midnight is 00:00 EST there, not 05:00
    expect(formatDateTime("2026-12-01T05:00:00Z", "America/New_York")).toBe("1 Dec 2026, 00:00 EST")
    expect(formatDateTime("2026-07-01T04:00:00Z", "America/New_York")).toBe("1 Jul 2026, 00:00 EDT")
    expect(formatDateTime("2026-12-01T05:00:00Z", "UTC")).toBe("1 Dec 2026, 05:00 UTC")
    expect(formatDate("2026-12-01T05:00:00Z", "Europe/Berlin")).toBe("1 Dec 2026")
    expect(formatDateTime(null)).toBe("—")
  })
})

describe("field labels", () => {
  it("name API paths in words and show values with their units", async () => {
    const { formatFieldValue, labelFor } = await import("../features/contracts/fieldLabels")
    expect(labelFor("terms.common.campaign_ids")).toBe("Campaigns")
    expect(labelFor("terms.cpm.rate_card.bands[0].rate_cpm")).toBe("Band 1 rate per thousand")
    expect(labelFor("terms.cpa.payouts[1].partner_payout.amount")).toBe("Payout 2 partner payout")
    expect(formatFieldValue("terms.cpm.rate_card.bands[0].rate_cpm", "12.5", "EUR", "UTC").replace(/\u00a0/g, " ")).toBe("EUR 12.50")
    expect(formatFieldValue("terms.common.payment_terms_days", 45, "EUR", "UTC")).toBe("45 days")
    expect(formatFieldValue("effective_from", "2026-12-01T05:00:00+00:00", "USD", "America/New_York")).toBe("1 Dec 2026, 00:00 EST")
    expect(formatFieldValue("terms.common.auto_renew", true, "USD", "UTC")).toBe("yes")
    expect(formatFieldValue("terms.common.flight_end", null, "USD", "UTC")).toBe("—")
  })
})

describe("pickers", () => {
  it("offer ISO 4217 currencies and IANA zones, and keep a value the tables lack", async () => {
    const { currencyChoices, timeZoneChoices, withValue } = await import("./choices")
    expect(currencyChoices().find((c) => c.code === "EUR")?.label).toBe("EUR — Euro")
    expect(timeZoneChoices()).toEqual(expect.arrayContaining(["America/New_York", "Europe/Berlin", "UTC"]))
    expect(withValue(["A"], "B", (v) => v, (v) => v)).toEqual(["B", "A"])
  })
})

describe("period ends", () => {
  it("end a month at the next month's first midnight in the contract's zone, across DST and year ends", async () => {
    const { periodEndMs } = await import("./periods")
    expect(new Date(periodEndMs("2026-12", "America/New_York") ?? 0).toISOString()).toBe("2027-01-01T05:00:00.000Z")
    expect(new Date(periodEndMs("2026-03", "Europe/Berlin") ?? 0).toISOString()).toBe("2026-03-31T22:00:00.000Z")
    expect(new Date(periodEndMs("2028-02", "America/New_York") ?? 0).toISOString()).toBe("2028-03-01T05:00:00.000Z")
    expect(new Date(periodEndMs("2026-10", "UTC") ?? 0).toISOString()).toBe("2026-11-01T00:00:00.000Z")
    expect(periodEndMs("2026-W49", "UTC")).toBeNull()
  })
})

describe("csv", () => {
  it("quotes per RFC 4180 and never lets a cell run as a spreadsheet formula", async () => {
    const { csvCell, toCsv } = await import("./csv")
    expect(csvCell('Acme, "Q4"')).toBe('"Acme, ""Q4"""')
    expect(csvCell("=HYPERLINK(1)")).toBe("'=HYPERLINK(1)")
    expect(csvCell("-12.50")).toBe("-12.50")
    expect(csvCell(null)).toBe("")
    expect(toCsv(["a", "b"], [["1", 2]])).toBe("a,b\r\n1,2\r\n")
  })
})
