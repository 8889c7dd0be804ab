"""Stage two of the metering worker, without any I/O: the usage ledger and period totals of the
advertisers it owns, and every rule that turns them into effects — running totals, budget
alerts, closes, adjustments, IVT decisions.

It consumes deltas (already decoded payloads) and the contract picture (a
:class:`~tally_billing.routing.ContractBook` the worker keeps current), keeps its state in
:class:`~tally_metering.state.TotalsStore` objects whose changelog records the worker writes,
and hands every output to ``emit(kind, record, key)``; the worker produces them in the batch's
Kafka transaction. So stage two's behaviour can be tested without a broker, in any order of
arrival (``tests/unit/metering/test_metering_stage_two.py``).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tally_billing.attribution import DecidedConversion, Repriced, reprice, reprice_reversal
from tally_billing.money import exact
from tally_billing.periods import Period, close_time, next_period, period_by_key
from tally_billing.routing import Contract, ContractBook, Route, from_micros, to_micros
from tally_billing.usage import BUCKET_US, BUCKETS_PER_DAY, DAY_US

from . import domain as d
from .metrics import WorkerMetrics
from .settings import MeteringSettings
from .state import ContractState, ConversionState, PeriodState, TotalsStore

log = logging.getLogger("tally.metering.stage_two")

_CLOSE_CHECK_S = 0.2
_CPM_LINES = ("cpm_impressions", "cpm_over_delivery")

Emit = Callable[[str, dict[str, Any], str], None]


def delta_partition(advertiser_id: str, partitions: int) -> int:
    """Stage two's partition of an advertiser: it owns the advertiser's usage and every contract of it."""
    return zlib.crc32(advertiser_id.encode()) % partitions


class StageTwo:
    def __init__(self, settings: MeteringSettings, book: ContractBook, emit: Emit, metrics: WorkerMetrics,
                 lookup_contract: Callable[[str], Contract | None] | None = None) -> None:
        self.book = book
        self.emit = emit
        self.metrics = metrics
        self.lookup_contract = lookup_contract or book.get
        self.grace = timedelta(seconds=settings.metering_grace_seconds)
        self.rerate_horizon_us = settings.metering_rerate_horizon_days * DAY_US
        self.totals_interval_s = settings.metering_totals_interval_ms / 1000
        self.t_imp = settings.metering_topic_impressions
        self.t_deltas = settings.metering_topic_deltas
        self.t_terms = settings.metering_topic_terms
        self.n_deltas = settings.metering_delta_partitions
        #: the state of every deltas partition this worker owns
        self.stores: dict[int, TotalsStore] = {}
        self.last_published: dict[tuple[str, str], float] = {}
        self.dirty_totals: set[tuple[str, str]] = set()
        self.empty_checked: dict[str, str] = {}
        #: contracts whose terms changed since their periods were last derived (checked every step)
        self.terms_changed: set[str] = set()
        self._last_close_check = 0.0
        #: the earliest close time (period end + grace) of a period still open, as of the last close_due
        self.next_close: datetime | None = None

    def close_and_publish(self, now: datetime) -> None:
        """Closes due periods and publishes throttled running totals (runs on every step)."""
        mono = time.monotonic()
        if mono - self._last_close_check >= _CLOSE_CHECK_S:
            # Closing is decided by the clock, not by the batch: checking a few times a second is
            # enough, and keeps an idle worker (a step every BATCH_WAIT_MS) cheap with many contracts.
            self._last_close_check = mono
            self.close_due(now)
        due = [k for k in self.dirty_totals if mono - self.last_published.get(k, 0.0) >= self.totals_interval_s]
        for key in sorted(due):
            self.dirty_totals.discard(key)
            known = self.book.get(key[0])
            if known is None:
                continue
            store = self.stores.get(delta_partition(known.advertiser_id, self.n_deltas))
            if store is None or key not in store.periods:
                continue
            self._publish_total(store, known, store.periods[key], now)
            self.last_published[key] = mono

    def reset(self) -> None:
        """Forget all state (the worker rebuilds it from the changelogs; an on-disk ledger is
        closed with nothing of the failed transaction written, so it is trusted again)."""
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        self.empty_checked.clear()
        self.dirty_totals.clear()
        self.terms_changed.update(self.book.contracts)

    def apply(self, partition: int, payload: dict[str, Any], now: datetime) -> None:
        """One delta of deltas partition ``partition``: usage, a conversion, or an IVT report."""
        store = self.stores.get(partition)
        if store is None:
            raise RuntimeError(f"no totals state for {self.t_deltas}[{partition}]")
        if payload["kind"] == "usage":
            self._apply_usage(store, payload, now)
        elif payload["kind"] == "cpa":
            self._apply_cpa(store, payload, now)
        elif payload["kind"] == "ivt":
            self._apply_ivt(store, payload, now)
        else:  # a delta of the pre-ledger worker: drain metering.deltas with it before upgrading
            raise RuntimeError(f"unknown delta kind {payload['kind']!r} at {self.t_deltas}[{partition}]")

    def _apply_usage(self, store: TotalsStore, payload: dict[str, Any], now: datetime) -> None:
        """Add one usage delta to the ledger, and to the totals of every period it reaches under
        today's terms; a closed period it reaches is re-rated into ``late_event`` adjustments."""
        advertiser, src = payload["advertiser_id"], payload["src"]
        source = f"{src['topic']}{d.SEP}{src['partition']}"
        changed: dict[tuple[str, str], tuple[Contract, PeriodState]] = {}
        waiting = 0
        newest_us = 0
        book = self.book
        for campaign, day, cls, cells, newest, next_offset in payload["groups"]:
            u = store.usage_day(advertiser, campaign, day)
            row = u.counts.get(cls)
            if row is None:
                u.add(0, cls, 0)
                row = u.counts[cls]
            for i, n in cells:
                row[i] += n
            if newest > u.max_event_us:
                u.max_event_us = newest
            u.include_offset(source, next_offset)
            store.mark(u)
            if newest > newest_us:
                newest_us = newest
            # classify per run of buckets in which every candidate contract keeps its segment and
            # period (one route per run), not per bucket
            base = day * BUCKETS_PER_DAY
            newest_bucket = newest // BUCKET_US - base
            k, n_cells = 0, len(cells)
            for a, b in book.runs(advertiser, campaign, day):
                n_run, last = 0, -1
                while k < n_cells and cells[k][0] < b:
                    last = cells[k][0]
                    n_run += cells[k][1]
                    k += 1
                if not n_run:
                    if k >= n_cells:
                        break
                    continue
                route = book.route(advertiser, campaign, (base + a) * BUCKET_US)
                if route is None:
                    waiting += n_run
                    continue
                tot = self._reached(store, changed, route).totals
                d.classify(tot, cls, n_run, route)
                run_newest = newest if last == newest_bucket else (base + last + 1) * BUCKET_US - 1
                if run_newest > tot.max_event_us:
                    tot.max_event_us = run_newest
                if next_offset > tot.offsets.get(source, -1):
                    tot.offsets[source] = next_offset
        if waiting:
            self.metrics.events.labels("impression", "no_contract").inc(waiting)
        if newest_us:
            self.metrics.event_to_total_seconds.observe(max(0.0, (to_micros(now) - newest_us) / 1e6))
        self._settle(store, changed, now, kind="late_event",
                     id_part=f"{src['topic']}:{src['partition']}:{src['first']}-{src['last']}",
                     source_event_id=src["first_id"], topic=src["topic"], partition=src["partition"], offset=src["first"],
                     reason=lambda key: f"impressions of {key} arrived after it closed "
                                        f"({src['topic']}[{src['partition']}]@{src['first']}..{src['last']})")

    def _apply_ivt(self, store: TotalsStore, payload: dict[str, Any], now: datetime) -> None:
        """Apply one IVT report whole, or refuse it whole: each entry moves ``count`` impressions of
        its window from valid to IVT usage (the window's latest buckets first). Every period it
        reaches is re-rated: open ones get a lower running total, closed ones ``ivt_credit``
        adjustments at the marginal price (tiers and caps re-rated, so under a binding cap the
        credit is zero)."""
        rec, src = payload["rec"], payload["src"]
        report_id, adv = rec["report_id"], rec["advertiser_id"]
        outcome: dict[str, Any] = {"report_id": report_id, "advertiser_id": adv, "vendor": rec["vendor"],
                                   "status": "applied", "reason": None, "campaign_id": None, "window_start": None,
                                   "window_end": None, "credited": 0, "decided_at": now}
        if report_id in store.ivt_reports:
            self.emit("ivt_report_outcome", {**outcome, "status": "duplicate"},
                       report_id)
            return
        plan, refusal = d.plan_ivt_credit(store.usage, adv, rec["entries"],
                                          not_before_us=to_micros(now) - self.rerate_horizon_us)
        if refusal is not None:
            k, reason = refusal
            campaign, start_us, end_us = rec["entries"][k][:3]
            store.decide_ivt_report(report_id, "refused")
            self.emit("ivt_report_outcome", {
                **outcome, "status": "refused", "reason": reason, "campaign_id": campaign,
                "window_start": from_micros(start_us), "window_end": from_micros(end_us)}, report_id)
            return
        changed: dict[tuple[str, str], tuple[Contract, PeriodState]] = {}
        for campaign, bucket, valid_cls, ivt_cls, n in plan:
            day, i = divmod(bucket, BUCKETS_PER_DAY)
            u = store.usage_day(adv, campaign, day)
            u.add(i, valid_cls, -n)
            u.add(i, ivt_cls, n)
            store.mark(u)  # a report touches few days
            route = self.book.route(adv, campaign, bucket * BUCKET_US)
            if route is None:
                continue  # not billed to anyone yet: the ledger alone changes
            tot = self._reached(store, changed, route).totals
            d.classify(tot, valid_cls, -n, route)
            d.classify(tot, ivt_cls, n, route)
        self._settle(store, changed, now, kind="ivt_credit", id_part=f"ivt:{report_id}", source_event_id=report_id,
                     topic=src["topic"], partition=src["partition"], offset=src["offset"],
                     reason=lambda key: f"IVT report {report_id} from {rec['vendor']} found invalid impressions "
                                        f"of {key} after it closed")
        credited = sum(n for *_, n in plan)
        store.decide_ivt_report(report_id, "applied")
        self.metrics.events.labels("ivt_report", "applied").inc()
        self.emit("ivt_report_outcome", {**outcome, "credited": credited}, report_id)

    def _reached(self, store: TotalsStore, changed: dict[tuple[str, str], tuple[Contract, PeriodState]],
                 route: Route) -> PeriodState:
        """The period a route reaches, noted in ``changed``; a closed one keeps what it billed
        before the change (the next re-rating is diffed against it)."""
        entry = changed.get(route.key)
        if entry is None:
            ps = store.period(*route.key)
            if ps.closed:
                self._ensure_billed(store, route.contract, ps)
            entry = changed[route.key] = (route.contract, ps)
        return entry[1]

    def _settle(self, store: TotalsStore, changed: dict[tuple[str, str], tuple[Contract, PeriodState]], now: datetime,
                *, kind: str, id_part: str, source_event_id: str, topic: str, partition: int, offset: int,
                reason: Callable[[str], str]) -> None:
        """After a change reached some periods: open ones get new running totals (and alerts),
        closed ones adjustments of ``kind`` for what they billed differently."""
        for contract, ps in changed.values():
            store.mark(ps)
            self.dirty_totals.add((ps.contract_id, ps.period_key))
            if ps.closed:
                self._rerate_closed(store, contract, ps, now, kind=kind, id_part=id_part, source_event_id=source_event_id,
                                    topic=topic, partition=partition, offset=offset, reason=reason(ps.period_key))
            else:
                self._check_alerts(store, contract, ps, now)

    def _ensure_billed(self, store: TotalsStore, contract: Contract, ps: PeriodState) -> None:
        """A closed period restored from a changelog written before ``billed`` existed bills what it rates to now."""
        if ps.billed is None:
            ps.billed = self._cpm_lines(store, contract, ps)

    def _cpm_lines(self, store: TotalsStore, contract: Contract, ps: PeriodState) -> list[d.Line]:
        rating = self.rate(store, contract, ps, self._period(contract, ps.period_key))
        return [ln for ln in rating.lines if ln.line_type in _CPM_LINES]

    def _rerate_closed(self, store: TotalsStore, contract: Contract, ps: PeriodState, now: datetime, *, kind: str,
                       id_part: str, source_event_id: str, topic: str, partition: int, offset: int, reason: str) -> None:
        """Each CPM price point whose rating now differs from what the closed period billed
        becomes one adjustment; closed lines + adjustments = the rating of the final picture."""
        assert ps.billed is not None
        after = self._cpm_lines(store, contract, ps)
        for line in d.diff_lines(ps.billed, after):
            self._adjustment(contract, ps, now, kind=kind, line=line, payout=None, partner_id=None,
                             source_event_id=source_event_id, id_part=id_part, topic=topic, partition=partition,
                             offset=offset, reason=reason)
        ps.billed = after
        store.mark(ps)

    def rederive_changed_terms(self, now: datetime) -> None:
        """Re-derive from the ledger every period of each advertiser whose contracts' terms changed
        since their totals were derived (a new contract, an amendment, a termination): open
        periods get new running totals, closed ones ``backdated_amendment`` adjustments.

        Idempotent and exactly-once: the revision a contract was derived under is state (its
        changelog commits with the effects), so a restart re-derives exactly what was not committed.
        """
        changed = set(self.terms_changed)
        self.terms_changed.clear()
        advertisers: dict[int, set[str]] = {}
        for cid in changed:
            contract = self.book.get(cid)
            if contract is None:
                continue
            q = delta_partition(contract.advertiser_id, self.n_deltas)
            store = self.stores.get(q)
            if store is None:
                continue  # another worker owns it
            cs = store.contracts.get(cid)
            if cs is None or cs.revision is None or cs.revision < contract.revision:
                advertisers.setdefault(q, set()).add(contract.advertiser_id)
        for q, advs in sorted(advertisers.items()):
            for adv in sorted(advs):
                self._rederive(self.stores[q], adv, now)

    def _rederive(self, store: TotalsStore, advertiser: str, now: datetime) -> None:
        contracts = self.book.of_advertiser(advertiser)
        locked_before = to_micros(now) - self.rerate_horizon_us
        derived = d.derive(self.book, store.usage_of(advertiser), not_before_us=locked_before)
        touched: list[tuple[datetime, Contract, PeriodState]] = []
        for contract in contracts:
            keys = {k for c, k in derived if c == contract.contract_id}
            keys |= {ps.period_key for ps in store.periods_of(contract.contract_id)}
            for key in keys:
                period = self._period(contract, key)
                if to_micros(period.end) <= locked_before:
                    continue  # locked: past the re-rating horizon
                ps = store.period(contract.contract_id, key)
                if ps.closed:
                    self._ensure_billed(store, contract, ps)  # before the totals change
                touched.append((period.start, contract, ps))
        for _, contract, ps in touched:
            ps.totals.replace_usage(derived.get((contract.contract_id, ps.period_key), d.PeriodTotals()), self.t_imp)
            store.mark(ps)
            self.dirty_totals.add((ps.contract_id, ps.period_key))
        # in period order: a lifetime tier or total cap carries from one period into the next
        for _, contract, ps in sorted(touched, key=lambda x: (x[1].contract_id, x[0])):
            if ps.closed:
                self._rerate_closed(store, contract, ps, now, kind="backdated_amendment", id_part=f"rev{contract.revision}",
                                    source_event_id=f"{contract.contract_id}@{contract.revision}",
                                    topic=self.t_terms, partition=0, offset=0,
                                    reason=f"contract terms revision {contract.revision} re-rated {ps.period_key} "
                                           f"after it closed")
            else:
                self._check_alerts(store, contract, ps, now)
        for contract in contracts:
            cs = store.contract(contract.contract_id)
            if contract.contract_type == "cpa" and (cs.revision is None or cs.revision < contract.revision):
                self._reprice_cpa(store, contract, now)
            cs.revision = contract.revision
            store.mark(cs)

    def _apply_cpa(self, store: TotalsStore, payload: dict[str, Any], now: datetime) -> None:
        rec = payload["rec"]
        src = payload["src"]
        contract = self.lookup_contract(rec["contract_id"])
        if contract is None:
            raise RuntimeError(f"attributed conversion for unknown contract {rec['contract_id']}")
        conv_key = (contract.contract_id, rec["conversion_id"])
        if conv_key in store.conversions:
            ps = self._cpa_period(store, contract, rec)
            ps.totals.count(d.DUPLICATE_CONVERSIONS)
            store.mark(ps)
            self.metrics.events.labels(rec["kind"], "duplicate").inc()
            return
        amount, payout = Decimal(rec["advertiser_amount"]), Decimal(rec["partner_payout"])
        ov = rec.get("order_value")
        cv = ConversionState(contract.contract_id, rec["conversion_id"], rec["kind"], "", int(rec["contract_version"]),
                             rec["event_type"], rec.get("partner_id"), amount, payout, quantity=0,
                             decided_version=int(rec["contract_version"]), decided_amount=amount, decided_payout=payout,
                             event_us=rec["event_time_us"], order_value=None if ov is None else Decimal(ov),
                             tier=rec.get("tier_position"), original_id=rec.get("original_conversion_id"),
                             completes=rec.get("reversal_completes"))
        original = None
        if rec["kind"] == "conversion":
            cv.quantity = 1
        else:
            original = store.conversions.get((contract.contract_id, cv.original_id or ""))
            if original is not None:
                cv.event_type, cv.partner_id = original.event_type, original.partner_id
                with exact():
                    original.reversed_amount += amount
                    original.reversed_payout += payout
                    remaining = original.decided_amount + original.reversed_amount
                # v2 says whether it completes the conversion; a v1 record leaves it to the amounts
                completes = cv.completes if cv.completes is not None else (remaining == 0 and original.decided_amount != 0)
                if completes and not original.fully_reversed:
                    original.fully_reversed = True
                    cv.quantity = -1
                store.mark(original)
        cv.version, cv.advertiser_amount, cv.partner_payout = self._price(contract, cv, original)
        ps = self._cpa_period(store, contract, rec, original)
        cv.period_key = ps.period_key
        ps.totals.add_cpa(cv.version, cv.event_type, cv.quantity, cv.advertiser_amount, cv.partner_id, cv.partner_payout)
        ps.totals.count(d.CONVERSIONS_ATTRIBUTED if rec["kind"] == "conversion" else d.REVERSAL_RECORDS)
        if cv.quantity == -1:
            ps.totals.count(d.CONVERSIONS_REVERSED)
        ps.totals.include_offset(src["topic"], src["partition"], src["offset"] + 1)
        ps.totals.max_event_us = max(ps.totals.max_event_us, rec["event_time_us"])
        store.conversions[conv_key] = cv
        store.mark(cv)
        self.metrics.events.labels(rec["kind"], "counted").inc()
        if ps.closed:
            kind = "late_event" if rec["kind"] == "conversion" else "reversal_after_close"
            line = _cpa_line(cv.version, cv.event_type, cv.quantity, cv.advertiser_amount)
            what = "conversion" if rec["kind"] == "conversion" else f"reversal of {rec.get('original_conversion_id')}"
            self._adjustment(contract, ps, now, kind=kind, line=line,
                             payout=cv.partner_payout if cv.partner_id else None,
                             partner_id=cv.partner_id, source_event_id=rec["conversion_id"], id_part=rec["conversion_id"],
                             topic=src["topic"], partition=src["partition"], offset=src["offset"],
                             reason=f"{what} {rec['conversion_id']} for {ps.period_key} arrived after it closed")
        store.mark(ps)
        self.dirty_totals.add((ps.contract_id, ps.period_key))
        if not ps.closed:
            self._check_alerts(store, contract, ps, now)

    def _price(self, contract: Contract, cv: ConversionState, original: ConversionState | None
               ) -> tuple[int, Decimal, Decimal]:
        """The version and exact amounts ``cv`` contributes under the contract's versions as they
        stand now (``tally_billing.attribution.reprice``): a conversion at its tier position, a
        reversal at its original's new prices. What the terms cannot price, or a v1 record
        without the facts, keeps what attribution decided."""
        if cv.kind == "conversion":
            priced = self._repriced(contract, cv)
            if priced is None:
                return cv.decided_version, cv.decided_amount, cv.decided_payout
            return priced.version, priced.advertiser_amount, priced.partner_amount
        if original is None:
            return cv.decided_version, cv.decided_amount, cv.decided_payout
        priced = self._repriced(contract, original) if cv.completes is not None else None
        amounts = None if priced is None else reprice_reversal(
            priced.priced, refunded_order_value=cv.order_value, completes=cv.completes is True)
        if priced is None or amounts is None:
            return original.version, cv.decided_amount, cv.decided_payout
        return priced.version, amounts[0], amounts[1]

    @staticmethod
    def _repriced(contract: Contract, cv: ConversionState) -> Repriced | None:
        if cv.tier is None:
            return None
        return reprice(contract.versions, DecidedConversion(
            decided_version=cv.decided_version, event_type=cv.event_type, partner_id=cv.partner_id,
            order_value=cv.order_value, occurred_at=from_micros(cv.event_us), tier_position=cv.tier))

    def _reprice_cpa(self, store: TotalsStore, contract: Contract, now: datetime) -> None:
        """Re-price every conversion (and reversal) of a CPA contract under its terms as they stand
        now. Open periods get new running totals; each changed price point of a closed period
        becomes a ``backdated_amendment`` adjustment per (version, event type, partner). Who a
        conversion is attributed to, and whether it was billed, is never re-decided."""
        locked_before = to_micros(now) - self.rerate_horizon_us
        mine = sorted((cv for (cid, _), cv in store.conversions.items() if cid == contract.contract_id),
                      key=lambda cv: (cv.kind != "conversion", cv.conversion_id))  # originals before reversals
        deltas: dict[tuple[str, int, str, str | None], list[Any]] = {}
        for cv in mine:
            period = self._period(contract, cv.period_key)
            if to_micros(period.end) <= locked_before:
                continue  # locked: past the re-rating horizon
            original = store.conversions.get((contract.contract_id, cv.original_id or "")) if cv.kind == "reversal" else None
            new = self._price(contract, cv, original)
            old = (cv.version, cv.advertiser_amount, cv.partner_payout)
            if new == old:
                continue
            for (v, a, p), sign in ((old, -1), (new, 1)):
                acc = deltas.setdefault((cv.period_key, v, cv.event_type, cv.partner_id), [0, Decimal(0), Decimal(0)])
                with exact():
                    acc[0] += sign * cv.quantity
                    acc[1] += a if sign > 0 else -a
                    acc[2] += p if sign > 0 else -p
            cv.version, cv.advertiser_amount, cv.partner_payout = new
            store.mark(cv)
        for (pkey, v, event_type, partner), (q, a, p) in sorted(deltas.items(), key=lambda x: (x[0][0], x[0][1], x[0][2], x[0][3] or "")):
            if q == 0 and a == 0 and p == 0:
                continue
            ps = store.period(contract.contract_id, pkey)
            ps.totals.add_cpa(v, event_type, q, a, partner, p)
            store.mark(ps)
            self.dirty_totals.add((ps.contract_id, ps.period_key))
            if ps.closed:
                self._adjustment(contract, ps, now, kind="backdated_amendment", line=_cpa_line(v, event_type, q, a),
                                 payout=p if partner else None, partner_id=partner,
                                 source_event_id=f"{contract.contract_id}@{contract.revision}",
                                 id_part=f"rev{contract.revision}/{partner or '-'}", topic=self.t_terms, partition=0,
                                 offset=0, reason=f"contract terms revision {contract.revision} re-priced conversions "
                                                  f"of {pkey} after it closed")
            else:
                self._check_alerts(store, contract, ps, now)

    def _cpa_period(self, store: TotalsStore, contract: Contract, rec: dict[str, Any],
                    original: ConversionState | None = None) -> PeriodState:
        """A reversal belongs to the period its original was billed in."""
        if rec["kind"] == "reversal":
            if original is not None:
                return store.period(contract.contract_id, original.period_key)
            if rec.get("original_event_time_us") is not None:
                return store.period(contract.contract_id, contract.period_at(rec["original_event_time_us"]).key)
        return store.period(contract.contract_id, contract.period_at(rec["event_time_us"]).key)

    def _adjustment(self, contract: Contract, ps: PeriodState, now: datetime, *, kind: str, line: d.Line,
                    payout: Decimal | None, partner_id: str | None, source_event_id: str, id_part: str, topic: str,
                    partition: int, offset: int, reason: str) -> None:
        applies_to = contract.period_at(to_micros(now)).key
        adjustment_id = (f"{contract.contract_id}/{ps.period_key}/{kind}/{id_part}/{line.line_type}/"
                         f"{line.contract_version}/{line.price_point}")
        self.emit("adjustment", {
            "adjustment_id": adjustment_id, "kind": kind, "contract_id": contract.contract_id,
            "advertiser_id": contract.advertiser_id, "currency": contract.currency,
            "corrects_period_key": ps.period_key, "applies_to_period_key": applies_to, "line_type": line.line_type,
            "contract_version": line.contract_version, "price_point": line.price_point, "event_type": line.event_type,
            "partner_id": partner_id, "quantity": line.quantity, "unit": line.unit, "unit_price": line.unit_price,
            "amount_exact": line.amount_exact, "partner_payout_exact": payout, "source_event_id": source_event_id,
            "source_topic": topic, "source_partition": partition, "source_offset": offset, "reason": reason,
            "created_at": now,
        }, contract.contract_id)

    def _period(self, contract: Contract, key: str) -> Period:
        return period_by_key(key, contract.time_zone, contract.period_kind)

    def rate(self, store: TotalsStore, contract: Contract, ps: PeriodState, period: Period) -> d.Rating:
        prior_n, prior_amount = self._prior(store, contract, period)
        return d.rate_period(contract, period, ps.totals, prior_lifetime_impressions=prior_n, prior_billed_total=prior_amount)

    def _prior(self, store: TotalsStore, contract: Contract, period: Period) -> tuple[int, Decimal]:
        """Billed impressions and exact amount of the contract's earlier periods (lifetime tiers, total cap)."""
        if not _needs_chain(contract):
            return 0, d.ZERO
        n, amount = 0, d.ZERO
        earlier = [(self._period(contract, ps.period_key), ps) for ps in store.periods_of(contract.contract_id)]
        for p, ps in sorted((x for x in earlier if x[0].start < period.start), key=lambda x: x[0].start):
            r = d.rate_period(contract, p, ps.totals, prior_lifetime_impressions=n, prior_billed_total=amount)
            n += r.quantity("cpm_impressions")
            with exact():
                amount += r.amount
        return n, amount

    def _check_alerts(self, store: TotalsStore, contract: Contract, ps: PeriodState, now: datetime) -> None:
        period = self._period(contract, ps.period_key)
        terms = d.terms_at_end(contract, period).terms
        rating = self.rate(store, contract, ps, period)
        caps: list[tuple[str, Decimal | None, Decimal]] = []
        if terms.cpm is not None:
            prior_amount = self._prior(store, contract, period)[1]
            with exact():
                lifetime_spent = prior_amount + rating.amount
            caps = [("per_period", terms.cpm.budget_caps.per_period, rating.amount),
                    ("total", terms.cpm.budget_caps.total, lifetime_spent)]
        elif terms.cpa is not None:
            caps = [("cpa_amount_per_period", terms.cpa.caps.contract.max_amount_per_period, rating.amount)]
        cs: ContractState | None = None
        for cap_kind, cap, spent in caps:
            for pct in d.alert_thresholds(spent, cap):
                if cap_kind == "total":
                    cs = store.contract(contract.contract_id)
                    if pct in cs.total_alerts:
                        continue
                    cs.total_alerts.add(pct)
                    store.mark(cs)
                    alert_id = f"{contract.contract_id}/total/{pct}"
                else:
                    mark = f"{cap_kind}:{pct}"
                    if mark in ps.alerts:
                        continue
                    ps.alerts.add(mark)
                    alert_id = f"{contract.contract_id}/{ps.period_key}/{cap_kind}/{pct}"
                assert cap is not None
                self.emit("budget_alert", {
                    "alert_id": alert_id, "contract_id": contract.contract_id, "advertiser_id": contract.advertiser_id,
                    "currency": contract.currency, "cap_kind": cap_kind, "period_key": ps.period_key,
                    "threshold_pct": pct, "cap": cap, "spent_exact": spent,
                    "latest_event_time": from_micros(ps.totals.max_event_us) if ps.totals.max_event_us else None,
                    "emitted_at": now,
                }, contract.contract_id)
        store.mark(ps)

    def close_due(self, now: datetime) -> None:
        next_close: datetime | None = None
        for q, store in self.stores.items():
            for contract in self.book.contracts.values():
                if delta_partition(contract.advertiser_id, self.n_deltas) == q:
                    upcoming = self._ensure_empty_periods(store, contract, now)
                    if upcoming is not None and (next_close is None or upcoming < next_close):
                        next_close = upcoming
            due = []
            for ps in store.periods.values():
                if ps.closed:
                    continue
                owner = self.book.get(ps.contract_id)
                if owner is None:
                    continue
                period = self._period(owner, ps.period_key)
                closes = close_time(period, self.grace)
                if closes <= now:
                    due.append((period.start, ps.contract_id, ps, owner, period))
                elif next_close is None or closes < next_close:
                    next_close = closes
            for _, _, ps, owner, period in sorted(due, key=lambda x: (x[0], x[1])):
                self._close(store, owner, ps, period, now)
        self.next_close = next_close

    def close_overdue_s(self, now: datetime) -> float:
        """How far ``now`` is past the earliest close time of a period still open at the last
        :meth:`close_due` (0 when none is past it). A worker that keeps stepping closes each period
        when its time comes, so this stays near 0; one that is stuck (no steps: the broker is away,
        a transaction cannot commit) lets it grow — ``tally_metering_period_close_overdue_seconds``."""
        nxt = self.next_close
        return 0.0 if nxt is None else max(0.0, (now - nxt).total_seconds())

    def _ensure_empty_periods(self, store: TotalsStore, contract: Contract, now: datetime) -> datetime | None:
        """A period of the flight with no event still closes (its minimum commitment is owed).
        Returns the close time of the contract's next period to close, if it is one the flight bills."""
        first = contract.versions[0]
        p = contract.period_at(to_micros(max(first.effective_from, _flight_start(contract))))
        checked = self.empty_checked.get(contract.contract_id)
        if checked is not None:
            p = self._period(contract, checked)
        while close_time(p, self.grace) <= now:
            if d.versions_governing(contract, p) and _flight_overlaps(contract, p):
                store.period(contract.contract_id, p.key)
            self.empty_checked[contract.contract_id] = p.key
            p = next_period(p)
        if d.versions_governing(contract, p) and _flight_overlaps(contract, p):
            return close_time(p, self.grace)
        return None

    def _close(self, store: TotalsStore, contract: Contract, ps: PeriodState, period: Period, now: datetime) -> None:
        rating = self.rate(store, contract, ps, period)
        record = d.period_closed_record(contract, period, ps.totals, rating, now)
        self.emit("period_closed", record, contract.contract_id)
        ps.closed = True
        ps.closed_at_us = to_micros(now)
        ps.billed = [ln for ln in rating.lines if ln.line_type in _CPM_LINES]
        store.mark(ps)
        self.dirty_totals.add((ps.contract_id, ps.period_key))
        log.info("period closed", extra={"close_id": record["close_id"], "lines": len(record["lines"])})

    def _publish_total(self, store: TotalsStore, contract: Contract, ps: PeriodState, now: datetime) -> None:
        period = self._period(contract, ps.period_key)
        rating = self.rate(store, contract, ps, period)
        terms = d.terms_at_end(contract, period).terms
        counts = {k: v for k, v in sorted(ps.totals.counts.items())}
        if contract.contract_type == "cpm":
            counts[d.BILLABLE] = rating.quantity("cpm_impressions")
            counts[d.OVER_DELIVERY] = rating.quantity("cpm_over_delivery")
        caps = terms.cpm.budget_caps if terms.cpm is not None else None
        record: dict[str, Any] = {
            "total_id": f"{contract.contract_id}/{ps.period_key}", "contract_id": contract.contract_id,
            "advertiser_id": contract.advertiser_id, "contract_type": contract.contract_type,
            "currency": contract.currency, "time_zone": contract.time_zone, "period_kind": str(period.kind),
            "period_key": ps.period_key, "period_start": period.start, "period_end": period.end,
            "status": "closed" if ps.closed else "open", "amount_exact": rating.amount,
            "budget_cap_per_period": caps.per_period if caps else None, "budget_cap_total": caps.total if caps else None,
            "minimum_commitment": rating.minimum_commitment,
            "lines": [{"line_type": ln.line_type, "contract_version": ln.contract_version, "price_point": ln.price_point,
                       "event_type": ln.event_type, "quantity": ln.quantity, "unit": ln.unit,
                       "unit_price": ln.unit_price, "amount_exact": ln.amount_exact} for ln in rating.lines],
            "payouts": d.payout_records(rating),
            "counts": counts,
            "latest_event_time": from_micros(ps.totals.max_event_us) if ps.totals.max_event_us else None,
            "updated_at": now,
        }
        self.emit("running_total", record, record["total_id"])

    def forget_old_usage(self, now: datetime, partitions: Iterable[int] | None = None) -> None:
        """Ledger days past the re-rating horizon are dropped (their periods are locked) — of
        ``partitions`` only when given: the worker passes those whose deltas the batch consumed,
        so the tombstones commit with an offset of their partition (which an on-disk ledger's
        checkpoint follows). Cheap when the cutoff day has not moved."""
        cutoff_day = (to_micros(now) - self.rerate_horizon_us) // DAY_US
        for q in self.stores if partitions is None else partitions:
            store = self.stores.get(q)
            if store is not None:
                store.forget_usage_before(cutoff_day)


def _cpa_line(version: int, event_type: str, quantity: int, amount: Decimal) -> d.Line:
    return d.Line("cpa_conversions", version, f"event:{event_type}", event_type, quantity, "per_unit",
                  d.display_unit_price(amount, quantity) if quantity else amount, amount)


def _needs_chain(contract: Contract) -> bool:
    from tally_billing.terms import TierBasis

    for v in contract.versions:
        cpm = v.terms.cpm
        if cpm is not None and (cpm.rate_card.tier_basis is TierBasis.LIFETIME or cpm.budget_caps.total is not None):
            return True
    return False


def _flight_start(contract: Contract) -> datetime:
    from tally_billing.periods import flight_start_instant

    c = contract.first.common
    return flight_start_instant(c.flight_start, c.time_zone)


def _flight_overlaps(contract: Contract, p: Period) -> bool:
    from tally_billing.periods import flight_end_instant

    starts = []
    for v in contract.versions:
        c = v.terms.common
        start = _flight_start(contract) if v is contract.versions[0] else v.effective_from
        end = flight_end_instant(c.flight_end, c.time_zone) if c.flight_end is not None else None
        starts.append((start, end))
    return any(s < p.end and (e is None or e >= p.start) for s, e in starts)
