"""``make bench``: Tally measured beside Kafka's own ceiling and a Kafka Streams peer.

Usage: ``.venv/bin/python bench/run.py [--runs 3] [--impressions 500000] [--only kafka,peer,...]
[--quick] [--profile]``. Prints the table and writes ``results/bench-<UTC time>.json`` and
``results/bench-latest.json``. Every figure is the median of ``--runs`` runs (at least 3 for a
real measurement) with min and max; ratios are computed within one round (the same data, one
after the other) and then summarised the same way. Anything that cannot be measured is printed
as "not measured: <why>", never as a number. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tally_bench import common
from tally_bench.common import NotMeasured, Report, Target

SECTIONS = ("kafka", "floor", "peer", "metering", "ingest", "attribution", "e2e", "invoicing", "contracts", "rerate", "pacing", "dedupe",
            "scaleout")


def declare(report: Report) -> None:
    f = report.figure
    s1, s2, s3 = "1 Kafka ceiling (Kafka's own perf tools)", "2 Python floor (confluent-kafka + fastavro)", "3 Kafka Streams peer"
    f("kafka.producer", s1, "ProducerPerformance, impression-sized records", "records/s",
      note="acks=all, idempotent, lz4, linger 5 ms (Tally's producer settings)")
    f("kafka.producer_p99", s1, "ProducerPerformance p99 latency", "ms")
    f("kafka.consumer", s1, "ConsumerPerformance on the impressions topic", "records/s")
    f("floor.codec", s2, "batch consume + tally_streams AvroCodec.decode", "records/s")
    f("floor.fastavro", s2, "batch consume + raw fastavro schemaless_reader", "records/s")
    f("ratio.floor_over_kafka", s2, "floor (codec) / Kafka consumer, same round", "ratio")
    f("peer.eos", s3, "Kafka Streams CPM counts (exactly_once_v2, 1 thread)", "records/s",
      note="decode + IVT/flight/campaign filter + RocksDB dedupe + repartition + count; counts checked")
    f("peer.alo", s3, "Kafka Streams CPM counts (at_least_once, 1 thread)", "records/s",
      note="the same topology without transactions: what exactly-once costs the peer")
    s4 = "4 Ingest (HTTP batches, load generator in a second process)"
    f("ingest.events", s4, "POST /v1/impressions accepted events/s, 2 processes", "events/s",
      target=Target(">=", 100_000, ">= 100,000"))
    f("ingest.p50", s4, "request latency p50, 2 processes", "ms")
    f("ingest.p99", s4, "request latency p99, 2 processes", "ms")
    f("ingest.events_1p", s4, "accepted events/s, 1 process (the service's default)", "events/s")
    f("ingest.p99_1p", s4, "request latency p99, 1 process", "ms")
    f("ratio.ingest_over_producer", s4, "ingest events/s (2 processes) / ProducerPerformance records/s, same sitting", "ratio",
      note="medians; ProducerPerformance runs in this sitting's stream rounds (--only kafka,ingest)")
    f("ratio.ingest_1p_over_producer", s4, "ingest events/s (1 process) / ProducerPerformance records/s, same sitting", "ratio")
    s5 = "5 Attribution (processor, one process)"
    f("attribution.index", s5, "exposure index build, impressions/s", "impressions/s", target=Target(">=", 100_000, ">= 100,000"))
    f("ratio.attribution_index_over_metering", s5, "index build / metering impressions/s, same sitting", "ratio",
      target=Target(">=", 0.75, ">= 0.75x"), note="metering's run of the same position in this sitting (--only metering,attribution)")
    f("attribution.uncovered", s5, "impressions of campaigns no CPA contract covers, impressions/s", "impressions/s",
      target=Target(">=", 300_000, ">= 300,000"))
    f("attribution.conversions", s5, "conversions/s decided, exposure index >= 1M households", "conversions/s",
      target=Target(">=", 20_000, ">= 20,000"))
    f("attribution.latency_p99", s5, "decision latency p99 at a steady 2,000 conversions/s, settle 0", "ms",
      target=Target("<", 500, "< 500 ms"))
    f("attribution.memory", s5, "memory per million households indexed (RSS growth)", "MiB")
    s6 = "6 Metering"
    f("metering.worker", s6, "impressions/s per worker process (pre-filled topic)", "impressions/s",
      target=Target(">=", 130_000, ">= 130,000"), note="to the committed running totals; totals checked per price point")
    f("ratio.metering_over_peer", s6, "metering / Kafka Streams peer, same round", "ratio", target=Target(">=", 3.0, ">= 3.00x"))
    f("ratio.metering_over_floor", s6, "metering / Python floor (codec), same round", "ratio")
    f("metering.e2e_p50", s6, "end-to-end p50, production -> GET /v1/spend @20k/s", "ms")
    f("metering.e2e_p99", s6, "end-to-end p99, production -> GET /v1/spend @20k/s", "ms", target=Target("<", 2000, "< 2000 ms"))
    f("metering.e2e_offered", s6, "offered load achieved by the producer", "events/s")
    s7 = "7 Invoicing"
    f("invoicing.wall", s7, "10,000 closed contract-periods -> 10,000 draft invoices", "s", target=Target("<", 60, "< 60 s"))
    s8 = "8 Contracts API"
    f("contracts.reads", s8, "GET /contracts/{id} requests/s", "requests/s")
    f("contracts.reads_p99", s8, "GET /contracts/{id} p99", "ms")
    f("contracts.flows", s8, "create -> submit -> approve flows/s", "flows/s")
    f("contracts.flows_p99", s8, "create -> submit -> approve flow p99", "ms")
    s9 = "9 Re-rating (usage ledger; backdated amendment after close)"
    f("rerate.latency", s9, "amendment -> committed adjustments, 1,000 campaigns x 31 d", "s",
      target=Target("<", 1.0, "< 1 s"))
    f("rerate.ledger_disk", s9, "ledger on disk per 1,000 campaign-days (compacted)", "MiB",
      note="key + value bytes of the latest record of every ug key (uncompressed Avro; the topic compresses with lz4)")
    f("rerate.ledger_memory", s9, "ledger in memory per 1,000 campaign-days", "MiB",
      note="tracemalloc: bytes allocated to rebuild the ledger days with TotalsStore.apply_changelog")
    s10 = "10 Pacing (faust-streaming worker)"
    f("pacing.update_p50", s10, "running-total update -> its pacing update p50 @5k/s", "ms")
    f("pacing.update_p99", s10, "running-total update -> its pacing update p99 @5k/s", "ms",
      target=Target("<", 2000, "< 2000 ms"), note="updated_at -> broker timestamp of the periods-changelog record")
    f("pacing.offered", s10, "offered running-total updates achieved", "updates/s")
    f("pacing.worker", s10, "faust worker records/s on the totals topic (pre-filled)", "records/s")
    s12 = "12 Scale-out (16 partitions; 2 cores: correctness and no collapse, not linear speed-up)"
    for n in (1, 2, 4):
        f(f"scaleout.metering_{n}", s12, f"metering, {n} worker process{'es' if n > 1 else ''}: events/s of the group", "events/s")
        if n > 1:
            f(f"scaleout.metering_{n}_per_worker", s12, f"metering, {n} worker processes: events/s per worker", "events/s")
    for n in (2, 4):
        f(f"scaleout.ratio_metering_{n}_over_1", s12, f"metering group of {n} / one worker, same round", "ratio",
          target=Target(">=", 0.8, ">= 0.80x (no collapse)"))
    f("scaleout.rebalance_join_s", s12, "rebalance settle: a worker joins mid-stream", "s")
    f("scaleout.rebalance_kill_s", s12, "rebalance settle: one of two workers SIGKILLed mid-stream", "s")
    for n in (1, 2):
        f(f"scaleout.attribution_{n}", s12, f"attribution, {n} processor{'s' if n > 1 else ''}: index build of the group",
          "impressions/s")
    f("scaleout.ratio_attribution_2_over_1", s12, "attribution 2 processors / 1, same round", "ratio",
      target=Target(">=", 0.8, ">= 0.80x (no collapse)"))


def guarded(report: Report, keys: list[str], fn: Callable[[], None]) -> None:
    """Run one measurement; on failure the keys not yet measured say why, in words."""
    try:
        fn()
    except NotMeasured as exc:
        print(f"  not measured: {exc}", flush=True)
        report.not_measured(keys, str(exc))
    except Exception as exc:  # a crash in one benchmark must not hide the others' figures
        traceback.print_exc()
        report.not_measured(keys, f"harness error: {type(exc).__name__}: {exc}")


def stream_rounds(report: Report, args: argparse.Namespace) -> None:
    from tally_bench import dataset, kafka_ceiling, metering, peer, python_floor

    from tally_streams.kafka import delete_topics

    want = set(args.only)
    if not want & {"kafka", "floor", "peer", "metering"}:
        return
    print(f"filling a throwaway topic with {args.impressions:,} Avro impressions ...", flush=True)
    ds = dataset.build(args.impressions)
    print(f"  {ds.topic}: {ds.records:,} records, {ds.billable:,} billable, {ds.avg_record_bytes} bytes on average, "
          f"{len(ds.expected)} (contract, period, rate) keys", flush=True)
    report.figures["kafka.producer"].note += f"; record size {ds.avg_record_bytes} B (mean encoded impression)"
    peer_ok: str | None = None
    if "peer" in want:
        print("building the Kafka Streams peer (mvn -q -B package) ...", flush=True)
        try:
            peer.build()
        except NotMeasured as exc:
            peer_ok = str(exc)
            report.not_measured(["peer.eos", "peer.alo", "ratio.metering_over_peer"], peer_ok)
    try:
        for r in range(args.runs):
            print(f"round {r + 1}/{args.runs}", flush=True)
            got: dict[str, float] = {}

            def rec(key: str, value: float, got: dict[str, float] = got) -> None:
                got[key] = value
                report.add(key, value)
                print(f"  {key:<28} {value:,.1f}", flush=True)

            if "kafka" in want:
                def kafka() -> None:
                    p = kafka_ceiling.produce(ds.records, ds.avg_record_bytes)
                    rec("kafka.producer", p["records_per_s"])
                    rec("kafka.producer_p99", p["p99_ms"])
                    rec("kafka.consumer", kafka_ceiling.consume(ds.topic, ds.records)["records_per_s"])
                guarded(report, ["kafka.producer", "kafka.producer_p99", "kafka.consumer"], kafka)
            if "floor" in want:
                def floor() -> None:
                    rec("floor.codec", python_floor.consume(ds.topic, ds.records, "codec"))
                    rec("floor.fastavro", python_floor.consume(ds.topic, ds.records, "fastavro"))
                guarded(report, ["floor.codec", "floor.fastavro"], floor)
            if "peer" in want and peer_ok is None:
                guarded(report, ["peer.eos"], lambda: rec("peer.eos", peer.run(ds)["records_per_s"]))
                guarded(report, ["peer.alo"],
                        lambda: rec("peer.alo", peer.run(ds, guarantee="at_least_once")["records_per_s"]))
            if "metering" in want:
                guarded(report, ["metering.worker"],
                        lambda: rec("metering.worker", metering.throughput(ds)["records_per_s"]))
            if "floor.codec" in got and "kafka.consumer" in got:
                rec("ratio.floor_over_kafka", got["floor.codec"] / got["kafka.consumer"])
            if "metering.worker" in got and "peer.eos" in got:
                rec("ratio.metering_over_peer", got["metering.worker"] / got["peer.eos"])
            if "metering.worker" in got and "floor.codec" in got:
                rec("ratio.metering_over_floor", got["metering.worker"] / got["floor.codec"])
        if args.profile and "metering" in want:
            print("profiling one more metering run (py-spy, not counted) ...", flush=True)
            try:
                report.profiles["metering worker (py-spy)"] = metering.throughput(ds, profile=True)["profile"]
            except NotMeasured as exc:
                report.profiles["metering worker (py-spy)"] = f"not profiled: {exc}"
    finally:
        delete_topics(common.BOOTSTRAP, [ds.topic])
    for key, why in (("ratio.floor_over_kafka", "needs the floor and the Kafka consumer in the same round"),
                     ("ratio.metering_over_peer", "needs metering and the peer measured in the same round"),
                     ("ratio.metering_over_floor", "needs metering and the floor measured in the same round")):
        report.not_measured([key], why)


def ingest_runs(report: Report, args: argparse.Namespace) -> None:
    from tally_bench.ingest import IngestBench

    #: processes -> (figure key, result field): the service's default (1), then two on one port
    figures = {1: (("ingest.events_1p", "events_per_s"), ("ingest.p99_1p", "p99_ms")),
               2: (("ingest.events", "events_per_s"), ("ingest.p50", "p50_ms"), ("ingest.p99", "p99_ms"))}
    keys = [key for wanted in figures.values() for key, _ in wanted]

    def body() -> None:
        for processes, wanted in figures.items():
            with IngestBench(processes=processes) as b:
                for r in range(args.runs):
                    out = b.run(batch=args.ingest_batch, concurrency=args.ingest_concurrency,
                                duration_s=args.ingest_seconds)
                    print(f"  {processes} process(es), round {r + 1}: {out}", flush=True)
                    for key, field in wanted:
                        report.add(key, out[field])
                if args.profile and processes == 2:
                    print("  profiling one more ingest run (py-spy, not counted) ...", flush=True)
                    out = b.run(batch=args.ingest_batch, concurrency=args.ingest_concurrency,
                                duration_s=args.ingest_seconds, profile=True)
                    report.profiles["attribution ingest (py-spy)"] = out["profile"]
        report.figures["ingest.events"].note = (f"batches of {args.ingest_batch} (JSON array), {args.ingest_concurrency} "
                                                f"requests in flight, {args.ingest_seconds:.0f} s per run, acks=all")

    guarded(report, keys, body)
    producer = report.figures["kafka.producer"].values
    for ratio, key in (("ratio.ingest_over_producer", "ingest.events"), ("ratio.ingest_1p_over_producer", "ingest.events_1p")):
        events = report.figures[key].values
        if producer and events:
            report.add(ratio, statistics.median(events) / statistics.median(producer))
            print(f"  {ratio:<28} {statistics.median(events) / statistics.median(producer):.2f}", flush=True)
        else:
            report.not_measured([ratio], "needs ProducerPerformance (kafka) and ingest in the same sitting")


def e2e_runs(report: Report, args: argparse.Namespace) -> None:
    from tally_bench.metering import EndToEnd

    keys = ["metering.e2e_p50", "metering.e2e_p99", "metering.e2e_offered"]

    def body() -> None:
        env = {}
        if args.e2e_totals_interval_ms:
            env["TALLY_METERING_TOTALS_INTERVAL_MS"] = str(args.e2e_totals_interval_ms)
            for k in keys:
                report.figures[k].note = f"TALLY_METERING_TOTALS_INTERVAL_MS={args.e2e_totals_interval_ms} (not the default)"
        with EndToEnd(env=env) as e2e:
            for r in range(args.runs):
                out = e2e.run(rate=args.e2e_rate, duration_s=args.e2e_seconds)
                print(f"  round {r + 1}: {out}", flush=True)
                report.add("metering.e2e_p50", out["p50_ms"])
                report.add("metering.e2e_p99", out["p99_ms"])
                report.add("metering.e2e_offered", out["offered_per_s"])

    guarded(report, keys, body)


def optional(report: Report, args: argparse.Namespace, module: str, keys: list[str]) -> None:
    """Sections whose modules may not exist yet: import failure is a plain 'not measured'."""
    try:
        mod = __import__(f"tally_bench.{module}", fromlist=["measure"])
    except ImportError as exc:
        report.not_measured(keys, f"benchmark not built: {exc}")
        return
    guarded(report, keys, lambda: mod.measure(report, args))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--impressions", type=int, default=500_000)
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs, to check the harness itself")
    ap.add_argument("--profile", action="store_true", help="one extra, uncounted run of metering and ingest under py-spy")
    ap.add_argument("--ingest-batch", type=int, default=5000)
    ap.add_argument("--ingest-concurrency", type=int, default=4)
    ap.add_argument("--ingest-seconds", type=float, default=10)
    ap.add_argument("--e2e-rate", type=int, default=20_000)
    ap.add_argument("--e2e-seconds", type=float, default=15)
    ap.add_argument("--e2e-totals-interval-ms", type=int, default=0,
                    help="override metering's running-total interval for the end-to-end runs (0 = the service default)")
    ap.add_argument("--invoices", type=int, default=10_000)
    ap.add_argument("--households", type=int, default=1_000_000)
    ap.add_argument("--conversions", type=int, default=10_000)
    ap.add_argument("--uncovered", type=int, default=500_000,
                    help="impressions of campaigns no contract covers (attribution's skip rate)")
    ap.add_argument("--steady-rate", type=int, default=2000, help="conversions/s of attribution's latency run")
    ap.add_argument("--steady-seconds", type=float, default=10, help="duration of attribution's latency run")
    ap.add_argument("--index-timeout-s", type=float, default=240)
    ap.add_argument("--api-seconds", type=float, default=8)
    ap.add_argument("--rerate-campaigns", type=int, default=1000, help="campaigns in the re-rating ledger (31 days each)")
    ap.add_argument("--rerate-per-hour", type=int, default=4,
                    help="impressions per campaign-hour in the re-rating ledger (4 = every 15-minute bucket)")
    ap.add_argument("--rerate-timeout-s", type=float, default=120, help="per-run deadline of a re-rating")
    ap.add_argument("--rerate-fill-timeout-s", type=float, default=900, help="deadline for building the ledger")
    ap.add_argument("--pacing-rate", type=int, default=5000, help="running-total updates/s offered to the pacing worker")
    ap.add_argument("--pacing-seconds", type=float, default=10)
    ap.add_argument("--pacing-keys", type=int, default=1000, help="contract-periods the updates are spread over")
    ap.add_argument("--pacing-records", type=int, default=100_000, help="pre-filled totals for the throughput run")
    ap.add_argument("--dedupe-ids", type=int, default=50_000_000,
                    help="distinct impression ids filled into metering's dedupe horizon (section dedupe)")
    ap.add_argument("--scaleout-impressions", type=int, default=1_000_000,
                    help="records of the 16-partition topic read by 1, 2 and 4 metering workers (section scaleout)")
    ap.add_argument("--scaleout-rate", type=int, default=10_000, help="impressions/s produced during the rebalance runs")
    ap.add_argument("--scaleout-households", type=int, default=500_000,
                    help="households indexed by 1 and 2 attribution processors (section scaleout)")
    ap.add_argument("--markdown", metavar="RESULTS_JSON", help="print a results file as a Markdown table and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        import json

        print(common.markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.quick:
        args.impressions = min(args.impressions, 50_000)
        args.ingest_seconds, args.e2e_seconds, args.api_seconds = 3, 5, 3
        args.invoices, args.households, args.conversions, args.index_timeout_s = 500, 20_000, 1_000, 120
        args.uncovered, args.steady_seconds = 20_000, 3
        args.rerate_campaigns = min(args.rerate_campaigns, 50)
        args.dedupe_ids = min(args.dedupe_ids, 200_000)
        args.scaleout_impressions = min(args.scaleout_impressions, 150_000)
        args.scaleout_rate = min(args.scaleout_rate, 5_000)
        args.scaleout_households = min(args.scaleout_households, 30_000)
    started = time.monotonic()
    report = Report()
    declare(report)
    from tally_streams.kafka import wait_for_broker

    wait_for_broker(common.BOOTSTRAP, timeout_s=60)
    stream_rounds(report, args)
    if "ingest" in args.only:
        print("ingest ...", flush=True)
        ingest_runs(report, args)
    if "attribution" in args.only:
        print("attribution ...", flush=True)
        optional(report, args, "attribution", ["attribution.index", "ratio.attribution_index_over_metering",
                                                "attribution.uncovered", "attribution.conversions",
                                                "attribution.latency_p99", "attribution.memory"])
    if "e2e" in args.only:
        print("metering end to end ...", flush=True)
        e2e_runs(report, args)
    if "invoicing" in args.only:
        print("invoicing ...", flush=True)
        optional(report, args, "invoicing", ["invoicing.wall"])
    if "contracts" in args.only:
        print("contracts API ...", flush=True)
        optional(report, args, "contracts", ["contracts.reads", "contracts.reads_p99", "contracts.flows", "contracts.flows_p99"])
    if "rerate" in args.only:
        print("re-rating (usage ledger) ...", flush=True)
        optional(report, args, "rerate", ["rerate.latency", "rerate.ledger_disk", "rerate.ledger_memory"])
    if "pacing" in args.only:
        print("pacing (faust worker) ...", flush=True)
        optional(report, args, "pacing", ["pacing.update_p50", "pacing.update_p99", "pacing.offered", "pacing.worker"])
    if "dedupe" in args.only:
        print("metering dedupe set on disk ...", flush=True)
        from tally_bench import dedupe_store

        dedupe_store.declare(report, args.dedupe_ids)
        optional(report, args, "dedupe_store", dedupe_store.KEYS)
    if "scaleout" in args.only:
        print("scale-out (metering workers, rebalances, attribution processors) ...", flush=True)
        optional(report, args, "scaleout", [k for k in report.figures if k.startswith("scaleout.")])
    for f in report.figures.values():
        if not f.values and f.not_measured is None:
            section = f.key.split(".")[0]
            f.not_measured = "section not selected (--only)" if section not in args.only else "no run completed"
    config = {k: v for k, v in vars(args).items()}
    config["wall_s"] = round(time.monotonic() - started, 1)
    data = report.to_json(config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = common.RESULTS / f"bench-{stamp}.json"
    common.write_json(out, data)
    common.write_json(common.RESULTS / "bench-latest.json", data)
    m = data["machine"]
    print()
    print(f"Tally benchmarks  {data['started'][:19]}Z  {m['nproc']} cores  {m['cpu_model']}  {m['memory_gib']} GiB  "
          f"load {m['loadavg_at_end']}  ({config['wall_s']:.0f} s{' QUICK' if args.quick else ''})")
    print(common.table(report))
    for name, text in report.profiles.items():
        print(f"\nprofile: {name}\n{text}")
    print(f"\nwritten: {out.relative_to(common.ROOT)} and results/bench-latest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
