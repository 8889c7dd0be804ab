"""The local three-broker cluster (`make up-cluster`) is configured as production is
(deploy/README.md): three voters, replication factor 3, two in sync, no unclean election, no
automatic topics — and on ports and folders of its own, apart from the single broker's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STACK_SH = ROOT / "deploy" / "bin" / "stack.sh"


def node_config(node: int, state: Path) -> dict[str, str]:
    out = subprocess.run([str(STACK_SH), "cluster-config", str(node)], capture_output=True, text=True, check=True,
                         timeout=30, env={"PATH": "/usr/bin:/bin", "TALLY_STATE_DIR": str(state)}).stdout
    pairs = (line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


@pytest.mark.parametrize("node", [1, 2, 3])
def test_each_node_has_the_production_replication_settings(node: int, tmp_path: Path) -> None:
    cfg = node_config(node, tmp_path)
    assert cfg["node.id"] == str(node)
    assert cfg["process.roles"] == "broker,controller"
    assert cfg["controller.quorum.voters"] == "1@127.0.0.1:19192,2@127.0.0.1:19193,3@127.0.0.1:19194"
    assert cfg["default.replication.factor"] == "3" and cfg["min.insync.replicas"] == "2"
    assert cfg["offsets.topic.replication.factor"] == "3"
    assert cfg["transaction.state.log.replication.factor"] == "3" and cfg["transaction.state.log.min.isr"] == "2"
    assert cfg["unclean.leader.election.enable"] == "false"
    assert cfg["auto.create.topics.enable"] == "false"


def test_the_nodes_have_ports_and_folders_of_their_own_apart_from_the_single_broker(tmp_path: Path) -> None:
    configs = [node_config(n, tmp_path) for n in (1, 2, 3)]
    listeners = [c["listeners"] for c in configs]
    assert listeners == ["PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19192",
                         "PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19193",
                         "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19194"]
    dirs = [c["log.dirs"] for c in configs]
    assert dirs == [str(tmp_path / "cluster" / f"node-{n}" / "data") for n in (1, 2, 3)]
