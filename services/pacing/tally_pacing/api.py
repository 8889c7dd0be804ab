"""The pacing API (port 8085), tenant-scoped exactly like the spend API.

* ``GET /v1/pacing?contract_id=&advertiser_id=&period_key=&status=`` — the pacing of every
  matching (contract, period), evaluated now (the service's clock), with the pacing of the
  contract's total (lifetime) cap over its flight (``lifetime``).
* ``GET /v1/pacing/{contract}/series?period_key=&granularity=hour|day`` — spend and billable
  counts per UTC hour, or per local day of the contract's zone; the contract's latest period
  when ``period_key`` is left out.

An advertiser token sees only its own advertiser (another advertiser's filter answers an empty
list, another advertiser's contract 404); partner tokens are refused (spend is advertiser
data); internal roles see everything. The handlers read the faust tables of the same process
through :class:`PacingStore`, so they hold no state of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from tally_billing.pacing import HOUR, Granularity, HourTotal, pace_total_cap, series
from tally_kit import web as kweb
from tally_kit.auth import Principal, TokenVerifier
from tally_kit.clock import Clock
from tally_kit.openapi import add_openapi
from tally_kit.problems import ApiError, not_found, validation_error

from .openapi_spec import spec
from .state import ID_LEN_MAX, Flight, PacingRules, PeriodState, evaluate, hour_key, hour_total
from .views import pacing_view, series_view

READ_ROLES = ("admin", "ops", "approver", "finance", "advertiser")
FILTERS = ("contract_id", "advertiser_id", "period_key", "status")
SERIES_PARAMS = ("period_key", "granularity")
_PERIOD_KEY = re.compile(r"\d{4}-(\d{2}|W\d{2})")
#: a month is at most 745 hours; a bound on what one series request walks
SERIES_HOURS_MAX = 24 * 7 * 6


class PacingStore(Protocol):
    """What the API reads: the pacing tables (faust tables in the worker, dicts in tests)."""

    def periods(self) -> Iterable[PeriodState]: ...
    def period(self, total_id: str) -> PeriodState | None: ...
    def hour(self, key: str) -> Mapping[str, Any] | None: ...
    def flight(self, contract_id: str) -> Flight | None: ...
    def budget(self, total_id: str) -> Mapping[str, Any] | None: ...
    def not_ready(self) -> str | None: ...


STORE_KEY: web.AppKey[PacingStore] = web.AppKey("pacing_store", PacingStore)
CLOCK_KEY: web.AppKey[Clock] = web.AppKey("pacing_clock", Clock)
RULES_KEY: web.AppKey[PacingRules] = web.AppKey("pacing_rules", PacingRules)


def _caller(request: web.Request) -> Principal:
    who = kweb.principal(request)
    who.require(*READ_ROLES)
    if who.tenant_type == "partner":
        raise ApiError(403, "pacing is advertiser data; partners read their payout statements")
    return who


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    problems: list[tuple[str, str]] = []
    for k in sorted(set(request.query) - set(allowed)):
        problems.append((f"query.{k}", "unknown parameter; use " + ", ".join(allowed)))
    out: dict[str, str] = {}
    for k in allowed:
        values = request.query.getall(k, [])
        if len(values) > 1:
            problems.append((f"query.{k}", "given more than once"))
        elif values:
            v = values[0]
            if not v or len(v) > ID_LEN_MAX:
                problems.append((f"query.{k}", f"must be 1 to {ID_LEN_MAX} characters"))
            else:
                out[k] = v
    if "period_key" in out and not _PERIOD_KEY.fullmatch(out["period_key"]):
        problems.append(("query.period_key", "must be a period key such as 2026-03 or 2026-W10"))
    if "status" in out and out["status"] not in {"open", "closed"}:
        problems.append(("query.status", "must be open or closed"))
    if "granularity" in out and out["granularity"] not in {g.value for g in Granularity}:
        problems.append(("query.granularity", "must be hour or day"))
    if problems:
        raise validation_error(problems, "invalid query parameters")
    return out


def _pacing_of(request: web.Request, p: PeriodState, contract_spends: list[Decimal]) -> dict[str, Any]:
    """The view of ``p``; ``contract_spends`` are the totals of every period of its contract
    (the lifetime spend its total cap is paced on)."""
    store = request.app[STORE_KEY]
    flight = store.flight(p.contract_id)
    now, rules = request.app[CLOCK_KEY].now(), request.app[RULES_KEY]
    lifetime = None
    if p.cap_total is not None and flight is not None:
        lifetime = pace_total_cap(period_spends=contract_spends, as_of=now, flight_start=flight.start,
                                  flight_end=flight.end, cap_total=p.cap_total, curve=rules.curve,
                                  tolerance_pct=rules.tolerance_pct)
    return pacing_view(p, evaluate(p, flight, now, rules), flight, store.budget(p.total_id), lifetime)


async def list_pacing(request: web.Request) -> web.Response:
    who = _caller(request)
    filters = _query(request, FILTERS)
    mapping = {"contract_id": "contract_id", "advertiser_id": "advertiser_id", "period_key": "period_key",
               "status": "status"}
    every = list(request.app[STORE_KEY].periods())
    spends: dict[str, list[Decimal]] = {}
    for p in every:
        spends.setdefault(p.contract_id, []).append(p.amount)
    rows = [p for p in every
            if who.sees_advertiser(p.advertiser_id)
            and all(str(getattr(p, mapping[k])) == v for k, v in filters.items())]
    items = [_pacing_of(request, p, spends[p.contract_id])
             for p in sorted(rows, key=lambda p: (p.contract_id, p.period_start))]
    return kweb.json_ok({"items": items, "count": len(items)})


async def contract_series(request: web.Request) -> web.Response:
    who = _caller(request)
    contract_id = request.match_info["contract"]
    if len(contract_id) > ID_LEN_MAX:
        raise validation_error([("path.contract", f"must be at most {ID_LEN_MAX} characters")])
    q = _query(request, SERIES_PARAMS)
    store = request.app[STORE_KEY]
    periods = [p for p in list(store.periods()) if p.contract_id == contract_id and who.sees_advertiser(p.advertiser_id)]
    if not periods:
        raise not_found("contract")
    if "period_key" in q:
        chosen = next((p for p in periods if p.period_key == q["period_key"]), None)
        if chosen is None:
            raise not_found("period")
    else:
        chosen = max(periods, key=lambda p: p.period_start)
    granularity = Granularity(q.get("granularity", "hour"))
    hours: dict[Any, HourTotal] = {}
    h = chosen.period_start.replace(minute=0, second=0, microsecond=0)
    last = min(chosen.last_hour, chosen.period_end - timedelta(microseconds=1))
    for _ in range(SERIES_HOURS_MAX):
        if h > last:
            break
        value = store.hour(hour_key(chosen.total_id, h))
        if value is not None:
            hours[h] = hour_total(value)
        h += HOUR
    # the hour of the newest total is kept in the periods value itself (state.hours_to_write)
    hours[chosen.hour] = HourTotal(chosen.amount, chosen.billable)
    points = series(hours, period_start=chosen.period_start, period_end=chosen.period_end, tz=chosen.time_zone,
                    granularity=granularity)
    return kweb.json_ok(series_view(chosen, granularity.value, points))


def create_api(store: PacingStore, clock: Clock, rules: PacingRules, *, verifier: TokenVerifier | None = None,
               registry: CollectorRegistry | None = None) -> web.Application:
    app = kweb.create_app("pacing", verifier=verifier or TokenVerifier.from_env(), registry=registry)
    app[STORE_KEY] = store
    app[CLOCK_KEY] = clock
    app[RULES_KEY] = rules

    async def tables_ready(app: web.Application) -> None:
        reason = app[STORE_KEY].not_ready()
        if reason is not None:
            raise RuntimeError(reason)

    kweb.add_readiness_check(app, tables_ready)
    app.router.add_get("/v1/pacing", list_pacing)
    app.router.add_get("/v1/pacing/{contract}/series", contract_series)
    add_openapi(app, spec())
    return app
