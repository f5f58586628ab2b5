"""Every path, name and address of the devcluster, in one place (conventions of the team plan).

All addresses sit inside 198.18.0.0/15 (the benchmarking range), so nothing the cluster does can collide
with, or be routed to, a real network.
"""

from __future__ import annotations

from pathlib import Path

# -- Host-side locations
STATE_DIR = Path("/var/lib/svcscope-devcluster")  # everything `up` makes; `down` deletes it
CACHE_DIR = Path("/var/cache/svcscope-devcluster")  # survives `down`: binaries, image tarballs
LOCK_FILE = CACHE_DIR / "devcluster.lock"  # serialises concurrent up/down (several test sessions share one)
FAILED_LOGS_DIR = CACHE_DIR / "last-failed-up"  # logs of a failed `up`, kept after its clean-up

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
NETNS = "svcscope-dc"
NETNS_PATH = Path("/run/netns") / NETNS
CGROUP_ROOT = "/svcscope-dc"  # kubelet's cgroupRoot, pre-created in every v1 hierarchy
SYSTEM_CGROUP = CGROUP_ROOT + "/system"  # the components themselves (pids hierarchy), so `down` finds shims
CGROUP_FS = Path("/sys/fs/cgroup")
# An empty directory that exists on Debian hosts; inside the node's mount namespace a tmpfs is mounted on
# it to hold the overlay upper layers (they may not live inside the overlaid trees themselves).
NS_STAGING_MOUNTPOINT = Path("/srv")

# -- Network
NODE_NAME = "svcscope-dc"
HOST_IFACE = "dc-host"  # host end of the apiserver link
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
HOST_LINK_IP = "198.18.255.253"
NS_LINK_IP = "198.18.255.254"
LINK_PREFIX = 30
LINK_CIDR = "198.18.255.252/30"
CLUSTER_DOMAIN = "cluster.local"
APISERVER_PORT = 6443
APISERVER_HOST_URL = f"https://{NS_LINK_IP}:{APISERVER_PORT}"  # the host reaches the apiserver this way
APISERVER_LOCAL_URL = f"https://127.0.0.1:{APISERVER_PORT}"  # the components, inside the namespace
ETCD_URL = "http://127.0.0.1:2379"  # loopback of the namespace only
