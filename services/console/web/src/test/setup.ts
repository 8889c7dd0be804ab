import "@testing-library/jest-dom/vitest"
import { cleanup } from "@testing-library/react"
import { afterEach, beforeEach, vi } from "vitest"

// TALLY_TEST_NOW (an ISO instant) runs the suite as if the clock read that instant, still advancing:
// `make test` runs it once more at a month, year and leap-day boundary (see the Makefile).
const fixedNow = (import.meta.env as Record<string, string | undefined>).TALLY_TEST_NOW
if (fixedNow !== undefined && fixedNow !== "") {
  const at = new Date(fixedNow)
  if (Number.isNaN(at.getTime())) throw new Error(`TALLY_TEST_NOW is not an ISO instant: ${fixedNow}`)
  beforeEach(() => {
    vi.useFakeTimers({ now: at, toFake: ["Date"], shouldAdvanceTime: true })
  })
}

afterEach(() => {
  cleanup()
  vi.useRealTimers()
})
