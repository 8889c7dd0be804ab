import { API_BASE, authHeaders } from "../app/api"

/** Downloads an export through the gateway with the user's token (an <a href> cannot send it). */
export async function downloadFile(path: string, token: string | null, fallbackName: string): Promise<void> {
  const resp = await fetch(`${API_BASE}${path}`, { headers: authHeaders(token) })
  if (!resp.ok) throw new Error(`download failed: HTTP ${resp.status}`)
  const disposition = resp.headers.get("Content-Disposition") ?? ""
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? fallbackName
  const url = URL.createObjectURL(await resp.blob())
  const a = document.createElement("a")
  a.href = url
  a.download = name
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}
