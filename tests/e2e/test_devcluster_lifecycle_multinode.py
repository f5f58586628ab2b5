"""`down` of the multi-node instance leaves nothing behind on any node (marker `multinode`).

conftest.py orders this module after the other tests (its name contains test_devcluster_lifecycle): it takes
the multi-node instance down; the next session's fixture brings it up again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import MULTINODE_INSTANCE, REPO, Cluster, devcluster

pytestmark = [pytest.mark.e2e, pytest.mark.multinode]

# Runs in a Python whose devcluster paths are the multi-node instance's (they are fixed at import).
_INSPECT = """\
import json, sys
from pathlib import Path
from devcluster import node, topology
from tests.e2e.test_devcluster_lifecycle import leftovers
shape = topology.current()
records = [r.__dict__ for r in node.read_records()]
if sys.argv[1] == "before":
    netns = [n.netns for n in shape.node_list()]
    print(json.dumps({"records": records, "netns": netns, "nodes": shape.nodes}))
else:
    before = json.loads(sys.argv[2])
    recs = [node.PidRecord(**r) for r in before["records"]]
    print(json.dumps(leftovers(Path(sys.argv[3]), recs, before["netns"])))
"""


def _inspect(*args: str) -> object:
    env = {**os.environ, "SVCSCOPE_DC_INSTANCE": MULTINODE_INSTANCE}
    proc = subprocess.run(
        [sys.executable, "-c", _INSPECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_down_leaves_nothing_on_any_node(multinode_cluster: Cluster) -> None:
    before = _inspect("before")
    assert isinstance(before, dict)
    assert before["nodes"] == 3 and len(before["netns"]) == 3
    # Per node: mount holder, containerd, kubelet, kube-proxy; beside them etcd and the three control planes.
    assert len(before["records"]) == 3 * 4 + 4, before["records"]
    devcluster("down", timeout=180, instance=MULTINODE_INSTANCE)
    left = _inspect("after", json.dumps(before), str(multinode_cluster.bin_dir))
    assert left == [], left
