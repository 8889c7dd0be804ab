import { describe, expect, it } from "vitest"

const startedAt = Date.now() // read at import, before setup.ts fakes the clock for each test

describe("the suite's clock", () => {
  it("reads TALLY_TEST_NOW when it is set, the wall clock otherwise, and advances", async () => {
    const fixed = (import.meta.env as Record<string, string | undefined>).TALLY_TEST_NOW
    const base = fixed ? new Date(fixed).getTime() : startedAt
    const first = Date.now()
    await new Promise((ok) => setTimeout(ok, 20))
    expect(first - base).toBeGreaterThanOrEqual(0)
    expect(first - base).toBeLessThan(120_000)
    expect(Date.now()).toBeGreaterThan(first)
  })
})
