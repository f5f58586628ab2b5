"""The cluster's shape (nodes, zones, kube-proxy mode) and what each node gets from it (pure).

Node 1 keeps the single-node names and addresses of `paths`, so `up` without flags is what it always was.
Node k >= 2 gets its own network namespace, node IP, pod CIDR, state directory (containerd root, kubelet
root-dir, /run), cgroup root, component names and log files.
"""

from __future__ import annotations

import ipaddress
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from devcluster import paths

PROXY_MODES = ("iptables", "nftables")
REGION = "devcluster"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"


class ShapeError(ValueError):
    """A shape that cannot be built; the message names the flag."""


@dataclass(frozen=True)
class Shape:
    nodes: int = 1
    zones: int = 1
    proxy_mode: str = "iptables"

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= paths.MAX_NODES:
            raise ShapeError(f"--nodes {self.nodes}: give 1 to {paths.MAX_NODES}")
        if not 1 <= self.zones <= self.nodes:
            raise ShapeError(f"--zones {self.zones}: give 1 to --nodes ({self.nodes}); a zone needs a node")
        if self.proxy_mode not in PROXY_MODES:
            raise ShapeError(f"--proxy-mode {self.proxy_mode!r}: give one of {', '.join(PROXY_MODES)}")

    @property
    def multi(self) -> bool:
        return self.nodes > 1

    @property
    def cluster_cidr(self) -> str:
        return paths.MULTI_NODE_CLUSTER_CIDR if self.multi else paths.POD_CIDR

    def node_list(self) -> list[Node]:
        return [node(self, k) for k in range(1, self.nodes + 1)]

    def describe(self) -> str:
        return f"{self.nodes} node(s), {self.zones} zone(s), kube-proxy {self.proxy_mode}"

    def to_json(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Shape:
        data = json.loads(text)
        return cls(int(data["nodes"]), int(data["zones"]), str(data["proxy_mode"]))


def zone_name(index: int) -> str:
    return f"zone-{string.ascii_lowercase[index]}"


@dataclass(frozen=True)
class Node:
    """One node of the cluster: its names, addresses and directories."""

    number: int  # 1-based
    name: str
    netns: str
    node_ip: str
    pod_cidr: str
    pod_gateway: str
    zone: str
    region: str
    state_dir: Path  # this node's own files (for node 1: the instance's state directory, as before)
    cgroup_root: str
    multi: bool

    @property
    def first(self) -> bool:
        return self.number == 1

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    def component(self, base: str) -> str:
        """PID-file / log name of one of this node's processes ("kubelet", "kubelet@svcscope-dc-2")."""
        return base if self.first else f"{base}@{self.name}"

    @property
    def kubelet_root_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.state_dir / "pod-logs"

    @property
    def containerd_root(self) -> Path:
        return self.state_dir / "containerd"

    @property
    def volume_plugin_dir(self) -> Path:
        return self.state_dir / "volume-plugins"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_dir / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.state_dir / "cni" / "networks"

    @property
    def run_dir(self) -> Path:
        """Bound onto /run inside the node's mount namespace."""
        return self.state_dir / "run"

    @property
    def containerd_socket(self) -> Path:
        """The node's containerd socket as the host sees it."""
        return self.run_dir / "containerd" / "containerd.sock"

    @property
    def config_dir(self) -> Path:
        return paths.CONFIG_DIR if self.first else self.state_dir / "config"

    @property
    def fabric_port(self) -> str:
        """The node's port on the fabric bridge (multi-node only)."""
        return f"dc-port{self.number}"

    def directories(self) -> tuple[Path, ...]:
        return (
            self.state_dir,
            self.kubelet_root_dir,
            self.pod_logs_dir,
            self.containerd_root,
            self.volume_plugin_dir,
            self.run_dir,
            self.config_dir,
        )


def node(shape: Shape, number: int) -> Node:
    if not 1 <= number <= shape.nodes:
        raise ShapeError(f"node {number}: the cluster has {shape.nodes}")
    first = number == 1
    pod_net = ipaddress.IPv4Network(paths.POD_CIDR) if first else _nth_pod_cidr(number)
    name = paths.NODE_NAME if first else f"{paths.NODE_NAME}-{number}"
    return Node(
        number=number,
        name=name,
        netns=paths.NETNS if first else name,
        node_ip=paths.NODE_IP if first else str(ipaddress.ip_address(paths.NODE_IP) + number - 1),
        pod_cidr=str(pod_net),
        pod_gateway=str(pod_net.network_address + 1),
        zone=zone_name((number - 1) % shape.zones),
        region=REGION,
        state_dir=paths.STATE_DIR if first else paths.NODES_DIR / name,
        # With several nodes, each kubelet gets a cgroup root of its own below the instance's, so `down`
        # still finds every pod by walking one tree.
        cgroup_root=f"{paths.CGROUP_ROOT}/{name}" if shape.multi else paths.CGROUP_ROOT,
        multi=shape.multi,
    )


def _nth_pod_cidr(number: int) -> ipaddress.IPv4Network:
    base = ipaddress.IPv4Network(paths.POD_CIDR)
    return ipaddress.IPv4Network((int(base.network_address) + (number - 1) * base.num_addresses, 24))


def recorded() -> Shape | None:
    """The shape `up` recorded for the running (or broken) cluster, if any."""
    try:
        return Shape.from_json(paths.SHAPE_FILE.read_text())
    except (OSError, ValueError, KeyError, ShapeError):
        return None


def current() -> Shape:
    return recorded() or Shape()


def find_node(shape: Shape, name: str) -> Node:
    for candidate in shape.node_list():
        if candidate.name == name:
            return candidate
    names = ", ".join(n.name for n in shape.node_list())
    raise ShapeError(f"--node {name!r}: no such node (nodes: {names})")


def node_netns_paths() -> list[Path]:
    """Every namespace pin an instance may have made, whatever shape it was (for `down` after a crash)."""
    found = [paths.NETNS_PATH, Path("/run/netns") / paths.FABRIC_NETNS]
    run_netns = Path("/run/netns")
    if run_netns.is_dir():
        found += sorted(
            p for p in run_netns.glob(f"{paths.NETNS}-*") if p.name.removeprefix(f"{paths.NETNS}-").isdigit()
        )
    return found
