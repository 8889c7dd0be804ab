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
