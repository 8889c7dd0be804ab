"""HTTP load generator, run as its own process: ``python -m tally_bench.loadgen <json config>``.

Keeps ``concurrency`` requests in flight against ``url``, each a pre-built batch body, for
``duration_s`` after ``warmup_s``; prints one JSON line: events/s accepted by the requests that
completed inside the measured window, and their latency percentiles. Bodies are built before the clock starts so the
generator measures the server, not its own JSON encoding. Only 127.0.0.1 is allowed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson


def percentile(sorted_values: list[float], pct: float) -> float:
    rank = max(1, min(len(sorted_values), int(-(-pct * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    if cfg.get("scenario") == "get":
        return await run_gets(cfg)
    if cfg.get("scenario") == "flow":
        return await run_flows(cfg)
    url = cfg["url"]
    if urlsplit(url).hostname != "127.0.0.1":
        raise SystemExit(f"refusing to load anything but 127.0.0.1: {url}")
    bodies: list[bytes] = [b.encode() for b in cfg["bodies"]]
    events_per_body: list[int] = cfg["events_per_body"]
    headers = {"Authorization": f"Bearer {cfg['token']}", "Content-Type": cfg.get("content_type", "application/json")}
    warmup_s, duration_s, concurrency = float(cfg["warmup_s"]), float(cfg["duration_s"]), int(cfg["concurrency"])
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    accepted = 0
    measured_from = time.perf_counter() + warmup_s
    stop_at = measured_from + duration_s
    next_body = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, next_body
        while True:
            i = next_body % len(bodies)
            next_body += 1
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            async with session.post(url, data=bodies[i], headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
            t1 = time.perf_counter()
            # Throughput counts what completed inside the window, whenever it started.
            if measured_from <= t1 <= stop_at:
                statuses[status] += 1
                latencies.append((t1 - t0) * 1000)
                if status == 200:
                    accepted += int(orjson.loads(payload)["accepted"])  # the answer is large: spare the shared cores
            if status == 429:
                await asyncio.sleep(0.05)  # the server asked to slow down

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    latencies.sort()
    expected_per_request = sum(events_per_body) / len(events_per_body)
    return {
        "events_per_s": accepted / duration_s,
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
        "events_per_request": expected_per_request,
    }


def _local(url: str) -> None:
    if urlsplit(url).hostname != "127.0.0.1":
        raise SystemExit(f"refusing to load anything but 127.0.0.1: {url}")


async def run_gets(cfg: dict[str, Any]) -> dict[str, Any]:
    """GET each of ``urls`` in turn from ``concurrency`` workers; requests/s and latency."""
    urls: list[str] = cfg["urls"]
    for u in urls[:1]:
        _local(u)
    headers = {"Authorization": f"Bearer {cfg['token']}"}
    measured_from = time.perf_counter() + float(cfg["warmup_s"])
    stop_at = measured_from + float(cfg["duration_s"])
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    counter = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal counter
        while time.perf_counter() < stop_at:
            url = urls[counter % len(urls)]
            counter += 1
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                status = resp.status
            t1 = time.perf_counter()
            if measured_from <= t1 <= stop_at:
                statuses[status] += 1
                latencies.append((t1 - t0) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=int(cfg["concurrency"])),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(int(cfg["concurrency"]))))
    latencies.sort()
    ok = statuses.get(200, 0)
    return {"requests_per_s": ok / float(cfg["duration_s"]), "statuses": {str(k): v for k, v in statuses.items()},
            "p50_ms": percentile(latencies, 50) if latencies else None, "p99_ms": percentile(latencies, 99) if latencies else None}


async def run_flows(cfg: dict[str, Any]) -> dict[str, Any]:
    """create -> submit -> approve (as many approvals as the policy asks, by different users)."""
    base = cfg["base_url"]
    _local(base)
    tokens = cfg["tokens"]  # ops, approver, finance
    terms = cfg["terms"]
    measured_from = time.perf_counter() + float(cfg["warmup_s"])
    stop_at = measured_from + float(cfg["duration_s"])
    flow_ms: list[float] = []
    failures: Counter[str] = Counter()
    created: list[str] = []
    n = 0

    def h(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[role]}", "Content-Type": "application/json",
                "Idempotency-Key": f"bench-{uuid.uuid4()}"}

    async def step(session: aiohttp.ClientSession, path: str, role: str, body: Any, expect: int) -> dict[str, Any]:
        async with session.post(base + path, data=json.dumps(body), headers=h(role)) as resp:
            payload = await resp.read()
            if resp.status != expect:
                raise RuntimeError(f"POST {path.split('/')[-1] or path} -> {resp.status}: {payload[:160]!r}")
            return dict(json.loads(payload))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal n
        while time.perf_counter() < stop_at:
            n += 1
            t0 = time.perf_counter()
            try:
                c = await step(session, "/contracts", "ops", {"name": f"bench flow {n} {uuid.uuid4().hex[:6]}",
                                                             "terms": terms, "partner_ids": []}, 201)
                cid = c["id"]
                v = await step(session, f"/contracts/{cid}/versions/1/submit", "ops", {}, 200)
                for role in ("approver", "finance"):
                    if v.get("state") != "submitted":
                        break
                    v = await step(session, f"/contracts/{cid}/versions/1/approve", role, {}, 200)
                if v.get("state") == "submitted":
                    raise RuntimeError("still submitted after an approver and a finance approval")
            except (RuntimeError, aiohttp.ClientError, KeyError, ValueError) as exc:
                failures[str(exc)[:120]] += 1
                continue
            t1 = time.perf_counter()
            created.append(cid)
            if measured_from <= t1 <= stop_at:
                flow_ms.append((t1 - t0) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=int(cfg["concurrency"])),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(int(cfg["concurrency"]))))
    flow_ms.sort()
    return {"flows_per_s": len(flow_ms) / float(cfg["duration_s"]), "flows": len(flow_ms),
            "p50_ms": percentile(flow_ms, 50) if flow_ms else None, "p99_ms": percentile(flow_ms, 99) if flow_ms else None,
            "failures": dict(failures.most_common(3)), "created": created}


def main() -> int:
    cfg = json.loads(open(sys.argv[1]).read())
    result = asyncio.run(run(cfg))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
