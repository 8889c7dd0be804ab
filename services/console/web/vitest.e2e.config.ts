import { defineConfig } from "vitest/config"

// Browser tests: Debian's Chromium driven by playwright-core against the real stack
export default defineConfig({
  test: {
    include: ["e2e/**/*.e2e.ts"],
    environment: "node",
    testTimeout: 120_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
})
