"""3. The peer: a Kafka Streams application (bench/peer, Java 17, Maven) counting CPM
impressions per contract, period and price point from the shared topic.

Built once per harness run with ``mvn -q -B package``; each run uses a fresh application id
(so it reads from the start), is timed from its first record to the moment its count store
holds every billable impression, and its counts are checked against the harness's own
recomputation — a wrong peer would make a meaningless comparison.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from .common import BOOTSTRAP, ROOT, NotMeasured
from .dataset import Dataset

PEER_DIR = ROOT / "bench" / "peer"
JAR = PEER_DIR / "target" / "tally-bench-peer.jar"


def build() -> None:
    if shutil.which("mvn") is None:
        raise NotMeasured("mvn is not installed")
    res = subprocess.run(["mvn", "-q", "-B", "package"], cwd=PEER_DIR, capture_output=True, text=True, timeout=600)
    if res.returncode != 0 or not JAR.exists():
        tail = (res.stdout + res.stderr).strip().splitlines()[-3:]
        raise NotMeasured(f"the peer did not build (mvn package): {tail}")


def run(ds: Dataset, *, guarantee: str = "exactly_once_v2", threads: int = 1, timeout_s: float = 300) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tally-bench-peer-") as tmp:
        contracts = ds.contracts_tsv(Path(tmp) / "contracts.tsv")
        out = Path(tmp) / "counts.tsv"
        cmd = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-cp", f"{JAR}:{PEER_DIR / 'target' / 'lib'}/*",
               "io.tally.bench.peer.CpmPeer", "--bootstrap", BOOTSTRAP, "--topic", ds.topic,
               "--schema", str(ROOT / "schemas" / "impression" / "v1.avsc"), "--contracts", str(contracts),
               "--expected-input", str(ds.records), "--expected-billable", str(ds.billable), "--out", str(out),
               "--guarantee", guarantee, "--threads", str(threads), "--timeout-s", str(int(timeout_s))]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 90, cwd=ROOT)
        line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("{")), None)
        if line is None:
            raise NotMeasured(f"the peer exited {res.returncode} without a result: {res.stderr.strip().splitlines()[-3:]}")
        result = json.loads(line)
        if "error" in result:
            raise NotMeasured(f"the peer: {result['error']}")
        counts: dict[tuple[str, str, str], int] = {}
        for row in out.read_text().splitlines():
            key, n = row.rsplit("\t", 1)
            contract, period, rate = key.split("|")
            counts[(contract, period, rate)] = int(n)
    if counts != dict(ds.expected):
        diff = {k: (counts.get(k), ds.expected.get(k)) for k in set(counts) | set(ds.expected) if counts.get(k) != ds.expected.get(k)}
        raise NotMeasured(f"the peer's counts disagree with the recomputation on {len(diff)} keys, e.g. {list(diff.items())[:2]}")
    return {"records_per_s": float(result["records_per_s"]), "seconds": float(result["seconds"]),
            "seconds_with_startup": float(result["seconds_with_startup"])}
