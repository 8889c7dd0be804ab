import { defineConfig } from "vitest/config"
import react from "@vitejs/plugin-react"

// `npm run dev` proxies /api to a running console gateway (which proxies on to the services)
export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/api": process.env.TALLY_CONSOLE_URL ?? "http://127.0.0.1:8080" } },
  build: { outDir: "dist", sourcemap: true },
  test: {
    globals: true,
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    restoreMocks: true,
  },
})
