import { describe, expect, it } from "vitest"
import { cpmTemplate, dayIn } from "./templates"

describe("dates in the contract's zone", () => {
  it.each([
    ["2026-12-01T02:00:00Z", "America/New_York", "2026-11-30"], // first of the month in UTC, still the 30th in New York
    ["2026-11-30T23:30:00Z", "Europe/Berlin", "2026-12-01"], // Berlin is already in December
    ["2024-03-01T04:00:00Z", "America/New_York", "2024-02-29"], // leap day
    ["2025-01-01T04:59:59Z", "America/New_York", "2024-12-31"], // year end
    ["2026-03-08T07:30:00Z", "America/New_York", "2026-03-08"], // New York springs forward
    ["2026-10-25T00:30:00Z", "Europe/Berlin", "2026-10-25"], // Berlin falls back
  ])("%s in %s is %s", (at, zone, day) => {
    expect(dayIn(zone, new Date(at))).toBe(day)
  })

  it("a new contract's flight starts today in its zone and ends on that year's 31 December", () => {
    const t = cpmTemplate("adv", new Date("2027-01-01T03:00:00Z"))
    expect(t.common.time_zone).toBe("America/New_York")
    expect(t.common.flight_start).toBe("2026-12-31")
    expect(t.common.flight_end).toBe("2026-12-31")
  })
})
