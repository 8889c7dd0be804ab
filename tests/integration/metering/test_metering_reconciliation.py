"""THE reconciliation test: exact totals through SIGKILLs, restarts and a rebalance.

A stream of 200,000+ events (impressions with duplicates, IVT, third-party counts, unknown and
uncovered campaigns, out-of-flight and out-of-order event times; attributed conversions with
re-emissions and reversals) goes through metering worker subprocesses while the test kills
worker 1 with SIGKILL at random points and restarts it, and a second worker joins and leaves.
Periods close on a controlled clock; late events and reversals arrive after the close.

The order of arrival is scrambled on purpose: one contract (R-5, an IO signed late) is
published only after its January has closed, while its usage has flowed since the start; a
backdated amendment of R-2 reaches back into its closed January; and a verification vendor's
IVT reports credit a closed period (R-3 January) and an open one (R-1 February), one report is
repeated and one claims more than its window holds (refused whole). Workers are killed while
the late terms are being re-derived, too.

Then, for every contract and period, the closed lines plus the adjustments that correct the
period must equal an independent recomputation from the raw topics under the final contract
picture with the billing library — quantity and exact amount per price point, and so to the
cent on every invoice line — and every close_id and adjustment_id must appear exactly once.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tally_billing.cpm import VersionCount, rate_cpm_period
from tally_billing.examples import cpa_terms_json, cpm_terms_json
from tally_billing.money import currency, exact, round_to_minor
from tally_billing.periods import PeriodKind, period_containing
from tally_billing.terms import parse_terms
from tally_billing.versions import ContractVersion, effective_version, in_flight
from tally_streams.kafka import read_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20260611
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Event times stay inside January and February in every contract's zone (New York to Sydney).
JAN, FEB = datetime(2026, 1, 1, 15, tzinfo=UTC), datetime(2026, 2, 1, 12, tzinfo=UTC)
END = datetime(2026, 2, 28, 12, tzinfo=UTC)


def cpm(campaigns: list[str], bands: list[tuple[int, str]], *, kind: str = "graduated", tz: str, cur: str = "USD",
        per_period: str | None = None, flight_start: str = "2026-01-01", advertiser: str = "adv-r") -> dict[str, Any]:
    t = cpm_terms_json()
    t["common"].update({"time_zone": tz, "campaign_ids": campaigns, "currency": cur, "advertiser_id": advertiser,
                        "flight_start": flight_start, "flight_end": "2026-12-31", "auto_renew": False,
                        "renewal_term_months": None, "escalator_pct": None, "notice_period_days": 0})
    t["cpm"] = {"rate_card": {"kind": kind, "tier_basis": "period",
                              "bands": [{"from_impressions": f, "rate_cpm": r} for f, r in bands]},
                "budget_caps": {"total": None, "per_period": per_period}, "minimum_commitment_per_period": None}
    return t


R1_V2_FROM = datetime(2026, 2, 10, 5, tzinfo=UTC)
CONTRACTS: dict[str, list[tuple[int, datetime, datetime | None, dict[str, Any]]]] = {
    "R-1": [(1, T0, None, cpm(["c1a", "c1b"], [(0, "12.50"), (20000, "10.00"), (40000, "8.125")], tz="America/New_York")),
            (2, R1_V2_FROM, None, cpm(["c1a"], [(0, "11.00"), (20000, "9.00")], tz="America/New_York"))],
    "R-2": [(1, T0, None, cpm(["c2"], [(0, "5.00"), (15000, "4.00")], kind="volume", tz="Europe/Berlin", cur="EUR",
                              per_period="50.00"))],
    "R-3": [(1, T0, None, cpm(["c3"], [(0, "350")], kind="flat", tz="Asia/Tokyo", cur="JPY"))],
    "R-4": [(1, T0, None, cpm(["c4a", "c4b"], [(0, "3.333"), (10000, "2.777")], tz="Australia/Sydney",
                              flight_start="2026-01-05"))],
}
CAMPAIGNS = ["c1a", "c1b", "c2", "c3", "c4a", "c4b", "c5a"]
# The IO signed late: R-5's impressions flow from the start, its terms arrive after January closed.
LATE_IO = {"R-5": [(1, T0, None, cpm(["c5a"], [(0, "4.00"), (8000, "3.00")], tz="America/Los_Angeles"))]}
# A backdated amendment, approved after January closed: R-2's rates change from 15 January (Berlin).
R2_V2_FROM = datetime(2026, 1, 14, 23, tzinfo=UTC)
R2_AMENDED = [(1, T0, R2_V2_FROM, CONTRACTS["R-2"][0][3]),
              (2, R2_V2_FROM, None, cpm(["c2"], [(0, "6.00"), (15000, "4.50")], kind="volume", tz="Europe/Berlin",
                                        cur="EUR", per_period="50.00"))]
FINAL = {**CONTRACTS, "R-2": R2_AMENDED, **LATE_IO}
# IVT windows, each inside one version and one period of its contract: (contract, campaign, start, end)
IVT_WINDOWS = [("R-3", "c3", datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)),
               ("R-1", "c1a", datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 2, 21, tzinfo=UTC))]


def cpa_terms() -> dict[str, Any]:
    t = cpa_terms_json()
    t["common"]["flight_start"] = "2026-01-01"
    return t


# ------------------------------------------------------------------------------ the stream


def rand_time(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span = int((end - start).total_seconds() * 1_000_000)
    return start + timedelta(microseconds=rng.randrange(span))


def make_impression(rng: random.Random, start: datetime, end: datetime) -> dict[str, Any]:
    iid = uuid.UUID(int=rng.getrandbits(128)).hex
    roll = rng.random()
    campaign = "c-unknown" if roll < 0.005 else rng.choice(CAMPAIGNS)
    ivt = "none"
    r = rng.random()
    if r < 0.02:
        ivt = "givt"
    elif r < 0.03:
        ivt = "sivt"
    return {"impression_id": iid, "event_time": rand_time(rng, start, end), "advertiser_id": "adv-r", "campaign_id": campaign,
            "partner_id": None, "household_id": f"hh-{iid[:8]}", "device_type": "ctv", "ivt": ivt,
            "measurement_source": "third_party" if rng.random() < 0.01 else "first_party"}


def make_conversion(rng: random.Random, cid: str, at: datetime) -> dict[str, Any]:
    event_type = rng.choice(["purchase", "signup"])
    amount = Decimal(rng.randrange(100, 50000)) / 100 if event_type == "purchase" else Decimal("4.00")
    with exact():
        payout = amount * Decimal("0.64") if event_type == "purchase" else Decimal("2.50")
    return {"conversion_id": cid, "kind": "conversion", "original_conversion_id": None, "contract_id": "R-cpa",
            "contract_version": 1, "advertiser_id": "adv-shop", "partner_id": rng.choice(["p-1", "p-2", None]),
            "event_type": event_type, "event_time": at, "original_event_time": None, "exposure_id": "x",
            "exposure_time": at - timedelta(hours=1), "rule": "last_touch/7d", "currency": "EUR",
            "advertiser_amount": amount, "partner_payout": payout, "decided_at": at}


def make_reversal(rng: random.Random, original: dict[str, Any], at: datetime, full: bool) -> dict[str, Any]:
    with exact():
        frac = Decimal(1) if full else Decimal(rng.randrange(1, 100)) / 100
        amount = -(original["advertiser_amount"] * frac) if original["event_type"] == "purchase" or full else Decimal(0)
        payout = -(original["partner_payout"] * frac) if original["event_type"] == "purchase" or full else Decimal(0)
    return {**original, "conversion_id": f"rv-{uuid.UUID(int=rng.getrandbits(128)).hex}", "kind": "reversal",
            "original_conversion_id": original["conversion_id"], "event_time": at,
            "original_event_time": original["event_time"], "advertiser_amount": amount, "partner_payout": payout}


# ------------------------------------------------------------------------------ recomputation


def read_raw(world: Any, key: str, schema: str) -> list[dict[str, Any]]:
    codec = world.codecs[schema]
    return [codec.decode(m.value()) for m in read_to_end(world.bootstrap, world.topics[key])]


def versions_of(cid: str) -> list[ContractVersion]:
    return [ContractVersion(cid, v, ef, et, parse_terms(t)) for v, ef, et, t in FINAL[cid]]


def valid_in_window(impressions: list[dict[str, Any]], campaign: str, start: datetime, end: datetime) -> int:
    """Unique valid first-party impressions of a campaign in a window: what the ledger holds as valid."""
    ids = {i["impression_id"] for i in impressions if i["campaign_id"] == campaign and i["ivt"] == "none"
           and i["measurement_source"] == "first_party" and start <= i["event_time"] < end}
    return len(ids)


LineKey = tuple[str, int, str]  # line_type, version, price_point


def recompute_cpm(impressions: list[dict[str, Any]], ivt_credits: dict[tuple[str, str, int], int]
                  ) -> dict[tuple[str, str], dict[LineKey, tuple[int, Decimal]]]:
    """The final picture: FINAL's versions, every unique impression, minus the applied IVT
    credits per (contract, period, version)."""
    by_campaign = {c: cid for cid, vs in FINAL.items() for _, _, _, t in vs for c in t["common"]["campaign_ids"]}
    versions = {cid: versions_of(cid) for cid in FINAL}
    seen: set[str] = set()
    counts: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for imp in impressions:
        cid = by_campaign.get(imp["campaign_id"])
        if cid is None or imp["impression_id"] in seen:
            continue
        seen.add(imp["impression_id"])
        vs = versions[cid]
        first = vs[0].terms.common
        period = period_containing(imp["event_time"], first.time_zone, PeriodKind(first.billing_period))
        v = effective_version(vs, imp["event_time"])
        if imp["ivt"] != "none" or v is None or not in_flight(v.terms, imp["event_time"]):
            continue
        if imp["campaign_id"] not in v.terms.common.campaign_ids or imp["measurement_source"] != "first_party":
            continue
        counts[(cid, period.key)][v.version] += 1
    for (cid, pkey, version), n in ivt_credits.items():
        counts[(cid, pkey)][version] -= n
    out: dict[tuple[str, str], dict[LineKey, tuple[int, Decimal]]] = {}
    for (cid, pkey), per_version in counts.items():
        vs = {v.version: v for v in versions[cid]}
        rating = rate_cpm_period([VersionCount(vs[n], k) for n, k in sorted(per_version.items())])
        lines: dict[LineKey, tuple[int, Decimal]] = {}
        for p in rating.price_points:
            q, a = lines.get(("cpm_impressions", p.version, f"band:{p.band_index}"), (0, Decimal(0)))
            with exact():
                lines[("cpm_impressions", p.version, f"band:{p.band_index}")] = (q + p.impressions, a + p.amount)
        for version, n in rating.over_delivery:
            lines[("cpm_over_delivery", version, "over_delivery")] = (n, Decimal(0))
        out[(cid, pkey)] = lines
    return out


def recompute_cpa(conversions: list[dict[str, Any]]) -> tuple[dict[tuple[str, str], dict[LineKey, tuple[int, Decimal]]],
                                                               dict[tuple[str, str], dict[str, Decimal]]]:
    tz = cpa_terms()["common"]["time_zone"]
    seen: set[str] = set()
    originals: dict[str, tuple[str, Decimal, Decimal]] = {}  # id -> period, amount, reversed so far
    lines: dict[tuple[str, str], dict[LineKey, tuple[int, Decimal]]] = defaultdict(dict)
    payouts: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for c in conversions:
        if c["conversion_id"] in seen:
            continue
        seen.add(c["conversion_id"])
        qty = 1
        if c["kind"] == "conversion":
            pkey = period_containing(c["event_time"], tz, PeriodKind.MONTH).key
            originals[c["conversion_id"]] = (pkey, c["advertiser_amount"], Decimal(0))
        else:
            pkey, amount, done = originals[c["original_conversion_id"]]
            with exact():
                now_done = done + c["advertiser_amount"]
            qty = -1 if amount + now_done == 0 and amount + done != 0 else 0
            originals[c["original_conversion_id"]] = (pkey, amount, now_done)
        key = ("cpa_conversions", 1, f"event:{c['event_type']}")
        q, a = lines[("R-cpa", pkey)].get(key, (0, Decimal(0)))
        with exact():
            lines[("R-cpa", pkey)][key] = (q + qty, a + c["advertiser_amount"])
            if c["partner_id"] is not None:
                payouts[("R-cpa", pkey)][c["partner_id"]] += c["partner_payout"]
    return lines, payouts


# ------------------------------------------------------------------------------ the test


def test_reconciliation_through_sigkill_restarts_and_a_rebalance(metering_world: Any, tmp_path: Path) -> None:
    w = metering_world
    w.extra_env["TALLY_METERING_BATCH_MAX"] = "4000"
    rng = random.Random(SEED)
    for cid, versions in CONTRACTS.items():
        w.publish_terms(cid, versions)
    w.publish_terms("R-cpa", [(1, T0, None, cpa_terms())])
    w.set_clock(datetime(2026, 1, 20, tzinfo=UTC))
    log = tmp_path / "workers.log"

    # Phase A: January and February, shuffled, with duplicates (same id, same household).
    phase_a = [make_impression(rng, JAN, END) for _ in range(142_000)]
    phase_a += [rng.choice(phase_a) for _ in range(9_000)]
    rng.shuffle(phase_a)
    convs_a = [make_conversion(rng, f"cv-{i}", rand_time(rng, JAN + timedelta(days=1), datetime(2026, 2, 27, tzinfo=UTC)))
               for i in range(1_500)]
    jan_convs = [c for c in convs_a if c["event_time"] < datetime(2026, 1, 30, tzinfo=UTC)]
    rev_a = [make_reversal(rng, c, c["event_time"] + timedelta(hours=5), full=rng.random() < 0.5) for c in convs_a[:200]]
    rev_a = [r for r in rev_a if r["event_time"] < datetime(2026, 3, 1, tzinfo=UTC)]
    stream_a = convs_a + rev_a[:] + [rng.choice(convs_a) for _ in range(100)]  # attribution re-emits after a crash

    # Phase B (after January closed): late January events, February, duplicates of closed ones,
    # late conversions and reversals after the close.
    phase_b = [make_impression(rng, JAN, datetime(2026, 1, 31, tzinfo=UTC)) for _ in range(12_000)]
    phase_b += [make_impression(rng, FEB, END) for _ in range(30_000)]
    phase_b += [rng.choice(phase_a) for _ in range(6_000)]
    rng.shuffle(phase_b)
    convs_b = [make_conversion(rng, f"cv-late-{i}", rand_time(rng, JAN + timedelta(days=2), datetime(2026, 1, 25, tzinfo=UTC)))
               for i in range(150)]
    rev_b = [make_reversal(rng, c, datetime(2026, 2, 16, tzinfo=UTC), full=True) for c in jan_convs[200:400]]
    stream_b = convs_b + rev_b + rev_b[:20]
    total_events = len(phase_a) + len(phase_b) + len(stream_a) + len(stream_b)
    assert total_events >= 200_000

    procs: dict[str, Any] = {}
    procs["w1"] = w.spawn("w1", log=log)
    done = threading.Event()
    errors: list[BaseException] = []

    def produce(imps: list[dict[str, Any]], convs: list[dict[str, Any]]) -> None:
        try:
            w.produce("attributed", "attributed_conversion", convs, lambda r: r["contract_id"])
            for i in range(0, len(imps), 5_000):
                w.produce("impressions", "impression", imps[i:i + 5_000], lambda r: r["household_id"])
                time.sleep(0.8)  # a stream, not one burst: the kills land while it flows
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def assignments(worker: str) -> int:
        text = log.read_text() if log.exists() else ""
        return sum(1 for line in text.splitlines() if '"partitions assigned"' in line and f'"worker": "{worker}"' in line)

    def wait_assigned(worker: str, before: int) -> None:
        deadline = time.monotonic() + 90
        while assignments(worker) <= before:
            assert time.monotonic() < deadline, f"{worker} got no partitions"
            assert procs[worker].poll() is None, f"{worker} exited with {procs[worker].returncode}"
            time.sleep(0.1)

    kills_mid_stream = []

    def chaos(kills: int, *, with_second_worker: bool) -> None:
        for k in range(kills):
            if with_second_worker and k == 1:
                before = assignments("w2")
                procs["w2"] = w.spawn("w2", static=False, log=log)
                wait_assigned("w2", before)
            if with_second_worker and k == kills - 1:
                procs["w2"].send_signal(signal.SIGTERM)  # leaves the group: w1 takes its partitions over
                assert procs["w2"].wait(60) == 0
            time.sleep(rng.uniform(0.2, 1.5))  # let it work, then kill it wherever it is
            # ...but with work pending: a worker that drains each burst quickly is often idle between
            # bursts, so while the stream flows wait (bounded) for a backlog before killing.
            lag, until = w.group_lag(), time.monotonic() + 5
            while lag == 0 and not done.is_set() and time.monotonic() < until:
                time.sleep(0.02)
                lag = w.group_lag()
            kills_mid_stream.append(lag > 0)
            procs["w1"].send_signal(signal.SIGKILL)
            procs["w1"].wait(30)
            before = assignments("w1")
            procs["w1"] = w.spawn("w1", log=log)
            wait_assigned("w1", before)

    wait_assigned("w1", 0)
    producer = threading.Thread(target=produce, args=(phase_a, stream_a))
    producer.start()
    chaos(4, with_second_worker=True)
    producer.join()
    assert not errors, errors
    w.wait_idle(timeout_s=180)

    w.set_clock(datetime(2026, 2, 15, tzinfo=UTC))
    w.wait_for("periods_closed", "period_closed", lambda rs: len({r["close_id"] for r in rs if "2026-01" in r["close_id"]}) == 5,
               timeout_s=120)
    done.clear()
    producer = threading.Thread(target=produce, args=(phase_b, stream_b))
    producer.start()
    for cid, versions in LATE_IO.items():  # late terms, re-derived while the kills land
        w.publish_terms(cid, versions)
    w.publish_terms("R-2", R2_AMENDED, revision=2)
    chaos(2, with_second_worker=False)
    producer.join()
    assert not errors, errors
    w.wait_idle(timeout_s=180)

    # Phase C: IVT found later, for a closed period and an open one; one report twice, one too big.
    seen_imps = read_raw(w, "impressions", "impression")
    credits: dict[tuple[str, str, int], int] = {}
    reports = []
    for k, (cid, campaign, start, end) in enumerate(IVT_WINDOWS):
        valid = valid_in_window(seen_imps, campaign, start, end)
        assert valid > 10, (campaign, valid)
        first = FINAL[cid][0][3]["common"]
        pkey = period_containing(start, first["time_zone"], PeriodKind.MONTH).key
        version = effective_version(versions_of(cid), start)
        assert version is not None
        credits[(cid, pkey, version.version)] = valid // 2
        entry = {"campaign_id": campaign, "window_start": start, "window_end": end, "ivt_class": "sivt",
                 "measurement_source": "first_party", "count": valid // 2}
        reports.append({"report_id": f"ivt-{k}", "vendor": "v", "advertiser_id": "adv-r", "entries": [entry],
                        "received_at": datetime(2026, 2, 28, tzinfo=UTC)})
    too_big = {**reports[0], "report_id": "ivt-too-big",
               "entries": [{**reports[0]["entries"][0], "count": valid_in_window(seen_imps, "c3", *IVT_WINDOWS[0][2:]) + 1}]}
    reports += [reports[0], too_big]
    w.produce("ivt_reports", "ivt_report", reports, lambda r: r["report_id"])
    outcomes = w.wait_for("ivt_outcomes", "ivt_report_outcome", lambda rs: len(rs) >= len(reports), timeout_s=120)
    assert sorted((o["report_id"], o["status"]) for o in outcomes) == [
        ("ivt-0", "applied"), ("ivt-0", "duplicate"), ("ivt-1", "applied"), ("ivt-too-big", "refused")]
    w.wait_idle(timeout_s=180)
    w.set_clock(datetime(2026, 3, 15, tzinfo=UTC))
    closed = w.wait_for("periods_closed", "period_closed", lambda rs: len({r["close_id"] for r in rs}) >= 12,
                        timeout_s=120)
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    adjustments = w.read_all("adjustments", "adjustment")

    # Exactly once: no close and no adjustment twice in the committed log.
    close_ids = [r["close_id"] for r in closed]
    assert len(close_ids) == len(set(close_ids)) == 12, sorted(close_ids)
    adj_ids = [a["adjustment_id"] for a in adjustments]
    assert len(adj_ids) == len(set(adj_ids))
    assert {a["kind"] for a in adjustments} == {"late_event", "reversal_after_close", "backdated_amendment", "ivt_credit"}
    assert {a["contract_id"] for a in adjustments if a["kind"] == "ivt_credit"} == {"R-3"}  # R-1's February was open

    # Closed totals + adjustments == recomputation from the raw topics, per price point, exactly.
    got: dict[tuple[str, str], dict[LineKey, tuple[int, Decimal]]] = defaultdict(dict)
    got_payouts: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))

    def add(where: tuple[str, str], key: LineKey, q: int, a: Decimal) -> None:
        q0, a0 = got[where].get(key, (0, Decimal(0)))
        with exact():
            got[where][key] = (q0 + q, a0 + a)

    for r in closed:
        for ln in r["lines"]:
            add((r["contract_id"], r["period_key"]), (ln["line_type"], ln["contract_version"], ln["price_point"]),
                ln["quantity"], ln["amount_exact"])
        for p in r["payouts"]:
            got_payouts[(r["contract_id"], r["period_key"])][p["partner_id"]] += p["amount_exact"]
    for a in adjustments:
        where = (a["contract_id"], a["corrects_period_key"])
        add(where, (a["line_type"], a["contract_version"], a["price_point"]), a["quantity"], a["amount_exact"])
        if a["partner_id"] is not None:
            got_payouts[where][a["partner_id"]] += a["partner_payout_exact"]

    raw_imps = read_raw(w, "impressions", "impression")
    raw_convs = read_raw(w, "attributed", "attributed_conversion")
    assert len(raw_imps) + len(raw_convs) == total_events
    expected = recompute_cpm(raw_imps, credits)
    cpa_lines, cpa_payouts = recompute_cpa(raw_convs)
    expected.update(cpa_lines)

    def clean(d: dict[LineKey, tuple[int, Decimal]]) -> dict[LineKey, tuple[int, Decimal]]:
        return {k: v for k, v in d.items() if v != (0, Decimal(0))}

    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for where in sorted(expected):
        assert clean(got[where]) == clean(expected[where]), where
        cur = currency("USD" if where[0] in ("R-1", "R-4", "R-5") else "EUR" if where[0] in ("R-2", "R-cpa") else "JPY")
        for key, (_, amount) in expected[where].items():
            assert round_to_minor(got[where][key][1], cur) == round_to_minor(amount, cur)
    for where, per_partner in cpa_payouts.items():
        assert {k: v for k, v in got_payouts[where].items() if v} == {k: v for k, v in per_partner.items() if v}, where
    # The run really exercised what it claims to.
    assert any(ln[0] == "cpm_over_delivery" for lines in expected.values() for ln in lines)
    assert sum(1 for a in adjustments if a["kind"] == "late_event" and a["line_type"] == "cpm_impressions") > 0
    assert sum(kills_mid_stream) >= 4, kills_mid_stream  # most kills hit while work was pending
    assert assignments("w2") >= 1 and assignments("w1") >= 8
