"""HTTP clients for the simulator: the contracts API (draft by ops, approve by another user) and
the ingest API (batches, postbacks, IVT reports), with bounded retries on 429/503 and
idempotency keys."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any
from urllib.parse import urlencode

import aiohttp

RETRY_STATUSES = {429, 502, 503, 504}


class ApiFailure(RuntimeError):
    pass


class Http:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   headers: Mapping[str, str] | None = None, attempts: int = 60, expect: Sequence[int] = (200, 201)) -> Any:
        """One request, retried while the service is down or asks to slow down (bounded)."""
        hdrs = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        if method == "POST" and "Idempotency-Key" not in hdrs:
            hdrs["Idempotency-Key"] = uuid.uuid4().hex  # the same key on every retry of this call
        data = None if body is None else json.dumps(body)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        last = ""
        for attempt in range(attempts):
            try:
                async with self.session.request(method, self.base + path, data=data, headers=hdrs) as resp:
                    text = await resp.text()
                    if resp.status in expect:
                        return json.loads(text) if text else None
                    last = f"{method} {path}: {resp.status} {text[:500]}"
                    if resp.status not in RETRY_STATUSES and not (resp.status == 409 and "in flight" in text):
                        raise ApiFailure(last)
                    delay = float(resp.headers.get("Retry-After", "0.5"))
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                last = f"{method} {path}: {exc!r}"
                delay = min(0.25 * (attempt + 1), 2.0)
            await asyncio.sleep(delay)
        raise ApiFailure(f"gave up after {attempts} attempts: {last}")


class ContractsClient:
    def __init__(self, http: Http, approver_token: str, finance_token: str) -> None:
        self.http = http
        self.approver_token = approver_token
        self.finance_token = finance_token

    async def create_approved(self, name: str, terms: Mapping[str, Any], partner_ids: Sequence[str] = ()) -> str:
        """Draft (as ops), submit, and approve as a different user — as many approvals as the
        policy asks for (approver, then finance) — until the version is approved."""
        cid = await self.create_draft(name, terms, partner_ids)
        await self.approve(cid)
        return cid

    async def create_draft(self, name: str, terms: Mapping[str, Any], partner_ids: Sequence[str] = ()) -> str:
        """A new contract whose version 1 is a draft (as ops): an insertion order not signed yet."""
        created = await self.http.call("POST", "/contracts", {"name": name, "terms": terms, "partner_ids": list(partner_ids)})
        return str(created["id"])

    async def approve(self, cid: str) -> None:
        """Submit a draft version 1 (as ops) and approve it as a different user — as many
        approvals as the policy asks for (approver, then finance) — until it is approved."""
        await self.http.call("POST", f"/contracts/{cid}/versions/1/submit")
        state = "submitted"
        for token in (self.approver_token, self.finance_token):
            if state == "approved":
                break
            v = await self.http.call("POST", f"/contracts/{cid}/versions/1/approve", {"comment": "simulated approval"},
                                     token=token, expect=(200, 201, 403, 409))
            state = (v or {}).get("state", state)
        v = await self.http.call("GET", f"/contracts/{cid}/versions/1")
        if v["state"] != "approved":
            raise ApiFailure(f"contract {cid} version 1 is {v['state']} after approvals")

    async def find_approved(self, name: str, advertiser_id: str, on: date) -> str | None:
        """The id of an approved contract with exactly this name and advertiser in force on
        ``on`` (its local day), or None: a restarted demo simulator reuses its contracts."""
        query = urlencode({"advertiser_id": advertiser_id, "q": name, "effective_on": on.isoformat(), "limit": 100})
        page = await self.http.call("GET", f"/contracts?{query}")
        for item in page["items"]:
            if item["name"] == name and item["status"] not in ("draft", "pending_approval"):
                return str(item["id"])
        return None

    async def wait_in_force(self, contract_id: str, timeout_s: float = 60.0) -> None:
        """Until the contract is past approval (active, scheduled, or — a past flight — ended) and
        its terms are on Kafka: the stream processors know a campaign only from there."""
        deadline = time.monotonic() + timeout_s
        while True:
            c = await self.http.call("GET", f"/contracts/{contract_id}")
            if c["status"] not in ("draft", "pending_approval") and c.get("published", True):
                return
            if time.monotonic() > deadline:
                raise ApiFailure(f"contract {contract_id} is still {c['status']} after {timeout_s}s")
            await asyncio.sleep(0.2)


class IngestClient:
    def __init__(self, http: Http) -> None:
        self.http = http

    async def batch(self, kind: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """POST a batch; resend the events the service asked to retry; fail on any rejection."""
        pending = list(events)
        for _ in range(120):
            res = await self.http.call("POST", f"/v1/{kind}", pending, expect=(200, 429, 503))
            results = res.get("results", []) if isinstance(res, dict) else []
            rejected = [r for r in results if r.get("status") == "rejected"]
            if rejected:
                raise ApiFailure(f"ingest rejected {len(rejected)} simulated {kind}: {rejected[:3]}")
            retry = {r["index"] for r in results if r.get("status") in ("retry", "failed")}
            if not retry and res.get("accepted", 0) + len(retry) >= len(pending):
                return dict(res)
            pending = [e for i, e in enumerate(pending) if i in retry] if retry else pending
            await asyncio.sleep(0.2)
        raise ApiFailure(f"{kind}: {len(pending)} events still not accepted")

    async def ivt_report(self, report: Mapping[str, Any]) -> dict[str, Any]:
        """POST one verification vendor's IVT report (accepted whole: 202; metering decides it later)."""
        return dict(await self.http.call("POST", "/v1/ivt-reports", report, expect=(202,)))

    async def postback(self, event: Mapping[str, Any], partner_token: str) -> None:
        params = {k: v for k, v in {
            "conversion_id": event["conversion_id"], "order_id": event.get("order_id"), "event_type": event["event_type"],
            "value": event.get("value"), "currency": event.get("currency"), "household_id": event["household_id"],
            "timestamp": event["event_time"], "advertiser_id": event["advertiser_id"],
        }.items() if v is not None}
        await self.http.call("GET", f"/v1/postback?{urlencode(params)}", token=partner_token)
