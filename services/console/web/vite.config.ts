import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { brotliCompressSync, constants, gzipSync } from "node:zlib"
import { defineConfig, type Plugin } from "vitest/config"
import react from "@vitejs/plugin-react"

const COMPRESSIBLE = /\.(js|css|html|svg|json|txt)$/
/** below this a compressed copy saves less than its own headers cost */
const MIN_COMPRESS_BYTES = 1024

/**
 * Writes `name.gz` and `name.br` beside every compressible build output; the gateway's
 * FileResponse sends the one the browser accepts (Content-Encoding), the plain file otherwise.
 * Compressed once at build time, with node's zlib (no extra dependency), never per request.
 */
function precompress(): Plugin {
  let outDir = "dist"
  return {
    name: "tally-precompress",
    apply: "build",
    configResolved(config) {
      outDir = resolve(config.root, config.build.outDir)
    },
    closeBundle() {
      const walk = (dir: string): string[] =>
        readdirSync(dir).flatMap((name) => {
          const path = join(dir, name)
          return statSync(path).isDirectory() ? walk(path) : [path]
        })
      for (const file of walk(outDir).filter((f) => COMPRESSIBLE.test(f))) {
        const raw = readFileSync(file)
        if (raw.length < MIN_COMPRESS_BYTES) continue
        writeFileSync(`${file}.gz`, gzipSync(raw, { level: 9 }))
        writeFileSync(`${file}.br`, brotliCompressSync(raw, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }))
      }
    },
  }
}

// `npm run dev` proxies /api to a running console gateway (which proxies on to the services)
export default defineConfig({
  plugins: [react(), precompress()],
  server: { proxy: { "/api": process.env.TALLY_CONSOLE_URL ?? "http://127.0.0.1:8080" } },
  // no source map in the build: the gateway would publish it (and the whole source) to every visitor
  build: { outDir: "dist", sourcemap: false, emptyOutDir: true },
  test: {
    globals: true,
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    restoreMocks: true,
    // two shared cores: a form test with every currency and zone in its pickers can take seconds
    testTimeout: 20_000,
  },
})
