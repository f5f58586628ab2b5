"""Every path, name and address of the devcluster, in one place (conventions of the team plan).

All addresses sit inside 198.18.0.0/15 (the benchmarking range), so nothing the cluster does can collide
with, or be routed to, a real network.

Several clusters can run side by side as *instances* (env SVCSCOPE_DC_INSTANCE, or `--instance`): every
host-visible name below (state directory, lock, namespaces, cgroup root, host interface, host link /30) is
derived from the instance name, so a second cluster never touches the first one. The default instance (no
name) keeps the values it always had. Addresses that live only inside an instance's namespaces (pods,
Services, node IPs) are the same in every instance: nothing on the host routes them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from pathlib import Path

INSTANCE_ENV = "SVCSCOPE_DC_INSTANCE"
# Short enough for the host interface name (15 bytes); no "-" so that a node's netns name ("<netns>-2") can
# never be another instance's.
INSTANCE_PATTERN = re.compile(r"[a-z][a-z0-9]{0,7}")
_RESERVED = frozenset({"fabric"})  # "<netns>-fabric" is the switch namespace of a multi-node instance


class InstanceError(ValueError):
    """The instance name is not usable; the message names the variable or flag."""


def check_instance(name: str, source: str = INSTANCE_ENV) -> str:
    if name and (not INSTANCE_PATTERN.fullmatch(name) or name in _RESERVED):
        raise InstanceError(
            f"{source}={name!r}: an instance name is 1-8 lower-case letters/digits starting with a letter"
            + (f" and not {sorted(_RESERVED)}" if name in _RESERVED else "")
        )
    return name


def link_cidr_for(instance: str) -> ipaddress.IPv4Network:
    """The host link /30 of an instance: the default one, or one of 64 in 198.18.253.0/24 chosen by name.

    Two named instances may hash to the same /30; `net.setup` refuses to start when the host already routes
    it, so a clash is an error at `up`, never a shared link."""
    if not instance:
        return ipaddress.IPv4Network("198.18.255.252/30")
    slot = int.from_bytes(hashlib.sha256(instance.encode()).digest()[:4], "big") % 64
    return ipaddress.IPv4Network(f"198.18.253.{slot * 4}/30")


INSTANCE = check_instance(os.environ.get(INSTANCE_ENV, ""))
_SUFFIX = f"-{INSTANCE}" if INSTANCE else ""

# -- Host-side locations
STATE_DIR = Path(f"/var/lib/svcscope-devcluster{_SUFFIX}")  # everything `up` makes; `down` deletes it
CACHE_DIR = Path("/var/cache/svcscope-devcluster")  # shared by all instances: binaries, image tarballs
# Serialises concurrent up/down of one instance (several test sessions share one).
LOCK_FILE = CACHE_DIR / f"devcluster{_SUFFIX}.lock"
FAILED_LOGS_DIR = CACHE_DIR / f"last-failed-up{_SUFFIX}"  # logs of a failed `up`, kept after its clean-up
SHAPE_FILE = STATE_DIR / "shape.json"  # nodes, zones, proxy mode of the running cluster

PKI_DIR = STATE_DIR / "pki"
LOG_DIR = STATE_DIR / "logs"
PID_DIR = STATE_DIR / "pids"
CONFIG_DIR = STATE_DIR / "config"
ETCD_DATA_DIR = STATE_DIR / "etcd"
KUBELET_ROOT_DIR = STATE_DIR / "kubelet"
POD_LOGS_DIR = STATE_DIR / "pod-logs"
CONTAINERD_ROOT = STATE_DIR / "containerd"
VOLUME_PLUGIN_DIR = STATE_DIR / "volume-plugins"
CNI_CONF_DIR = STATE_DIR / "cni" / "net.d"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
# Bound onto /run inside the node's mount namespace: containerd's shim sockets live under a hard-coded
# /run/containerd, and pod network namespaces under /run/netns; neither may land on the host's /run.
NS_RUN_DIR = STATE_DIR / "run"
CONTAINERD_STATE = Path("/run/containerd")  # as seen inside the node's mount namespace
CONTAINERD_SOCKET = NS_RUN_DIR / "containerd" / "containerd.sock"  # the same socket, reachable from the host

ADMIN_KUBECONFIG = STATE_DIR / "admin.kubeconfig"

# -- Namespaces and cgroups
NETNS = f"svcscope-dc{_SUFFIX}"  # the first node's, which also holds the control plane
NETNS_PATH = Path("/run/netns") / NETNS
CGROUP_ROOT = f"/svcscope-dc{_SUFFIX}"  # kubelet's cgroupRoot, pre-created in every v1 hierarchy
SYSTEM_CGROUP = CGROUP_ROOT + "/system"  # the components themselves (pids hierarchy), so `down` finds shims
CGROUP_FS = Path("/sys/fs/cgroup")
# An empty directory that exists on Debian hosts; inside the node's mount namespace a tmpfs is mounted on
# it to hold the overlay upper layers (they may not live inside the overlaid trees themselves).
NS_STAGING_MOUNTPOINT = Path("/srv")

# -- Network
NODE_NAME = NETNS  # the first node; the others are NODE_NAME-2, -3 ... (see topology.py)
HOST_IFACE = f"dc{INSTANCE}-host"  # host end of the apiserver link
LINK_IFACE = "dc-link"  # namespace end of the apiserver link
NODE_IFACE = "dc-node"  # carries the node IP and the default route (both ends of this pair stay inside)
SINK_IFACE = "dc-sink"  # the other end: reaches nothing
BRIDGE_IFACE = "dc0"  # CNI bridge

POD_CIDR = "198.18.0.0/24"
POD_GATEWAY = "198.18.0.1"
NODE_IP = "198.18.255.1"
SERVICE_CIDR = "198.19.0.0/16"
APISERVER_SERVICE_IP = "198.19.0.1"
DNS_SERVICE_IP = "198.19.0.10"
_LINK = link_cidr_for(INSTANCE)
HOST_LINK_IP = str(_LINK.network_address + 1)
NS_LINK_IP = str(_LINK.network_address + 2)
LINK_PREFIX = 30
LINK_CIDR = str(_LINK)
CLUSTER_DOMAIN = "cluster.local"
APISERVER_PORT = 6443
APISERVER_HOST_URL = f"https://{NS_LINK_IP}:{APISERVER_PORT}"  # the host reaches the apiserver this way
APISERVER_LOCAL_URL = f"https://127.0.0.1:{APISERVER_PORT}"  # the components, inside the namespace
ETCD_URL = "http://127.0.0.1:2379"  # loopback of the namespace only

# -- Several nodes (`up --nodes N`): the first node is the one above (with the control plane beside it);
# node k (2..N) gets its own namespaces and state below NODES_DIR. The nodes meet on a bridge in a namespace
# of its own, like the container network kind puts its nodes on; each node routes the others' pod CIDRs
# via their node IPs, as simple CNIs (kindnet) do.
MAX_NODES = 8
NODES_DIR = STATE_DIR / "nodes"
FABRIC_NETNS = f"{NETNS}-fabric"
FABRIC_BRIDGE = "dc-fabric"
NODE_SUBNET_PREFIX = 25  # node IPs 198.18.255.1 .. .8 on the fabric; clear of the default host link /30
MULTI_NODE_CLUSTER_CIDR = "198.18.0.0/20"  # node k's pods: 198.18.(k-1).0/24
