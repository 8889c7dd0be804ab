/**
 * Server-sent events over fetch: EventSource cannot send an Authorization header, so the
 * console reads the stream itself. Parses the text/event-stream format (WHATWG HTML §9.2).
 */
export interface ServerEvent {
  event: string
  data: string
  id?: string
}

export function parseEvents(buffer: string): { events: ServerEvent[]; rest: string } {
  const events: ServerEvent[] = []
  const normalized = buffer.replace(/\r\n?/g, "\n")
  const blocks = normalized.split("\n\n")
  const rest = blocks.pop() ?? ""
  for (const block of blocks) {
    let event = "message"
    const data: string[] = []
    let id: string | undefined
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue
      const colon = line.indexOf(":")
      const name = colon === -1 ? line : line.slice(0, colon)
      const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "")
      if (name === "event") event = value
      else if (name === "data") data.push(value)
      else if (name === "id") id = value
    }
    if (data.length) events.push({ event, data: data.join("\n"), id })
  }
  return { events, rest }
}

/** Reads `url` until `signal` aborts, calling `onEvent` per event; reconnects after a drop. */
export async function streamEvents(
  url: string,
  headers: Record<string, string>,
  onEvent: (e: ServerEvent) => void,
  signal: AbortSignal,
  onStatus: (s: "open" | "reconnecting") => void = () => undefined,
): Promise<void> {
  let delayMs = 1000
  // read through a function: the signal flips while this loop awaits
  const stopped = () => signal.aborted
  while (!stopped()) {
    try {
      const resp = await fetch(url, { headers: { ...headers, Accept: "text/event-stream" }, signal })
      if (!resp.ok || !resp.body) throw new Error(`stream answered ${resp.status}`)
      onStatus("open")
      delayMs = 1000
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ""
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        const parsed = parseEvents(buffer + value)
        buffer = parsed.rest
        parsed.events.forEach(onEvent)
      }
    } catch {
      // a dropped connection is retried below with backoff
    }
    if (stopped()) return
    onStatus("reconnecting")
    await new Promise((resolve) => setTimeout(resolve, delayMs))
    delayMs = Math.min(delayMs * 2, 15_000)
  }
}
