"""Configuration files and command lines of the cluster's components (pure: text in, text out).

The settings that matter on these VMs come from DEVCLUSTER-FACTS.md; each is commented where it is set.
The control plane's files live in the instance's config directory; each node has its own kubelet,
kube-proxy, containerd and CNI files (for the first node, in the same places as they always were).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from devcluster import paths, pki, topology
from devcluster.topology import Node, Shape

PAUSE_IMAGE = "localhost/pause:3.10"

RESOLV_CONF = paths.CONFIG_DIR / "resolv.conf"


def kubelet_config_path(node: Node) -> Path:
    return node.config_dir / "kubelet.json"


def kube_proxy_config_path(node: Node) -> Path:
    return node.config_dir / "kube-proxy.json"


def containerd_config_path(node: Node) -> Path:
    return node.config_dir / "containerd.toml"


def cni_conflist_path(node: Node) -> Path:
    return node.cni_conf_dir / "10-svcscope-dc.conflist"


def _first() -> Node:
    return topology.node(Shape(), 1)


# The single-node locations, as other code and tests know them.
KUBELET_CONFIG = kubelet_config_path(_first())
KUBE_PROXY_CONFIG = kube_proxy_config_path(_first())
CONTAINERD_CONFIG = containerd_config_path(_first())
CNI_CONFLIST = cni_conflist_path(_first())
CNI_DATA_DIR = _first().cni_data_dir


@dataclass(frozen=True)
class Component:
    """One long-running process: its name (also of its log and PID file), command line, and the namespace
    it runs in (a node's network namespace; the control plane's is the first node's)."""

    name: str
    argv: tuple[str, ...]
    netns_path: Path = field(default=paths.NETNS_PATH)


def kubelet_config(node: Node | None = None) -> str:
    node = node or _first()
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.crt(pki.CA))},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki.crt(pki.kubelet_serving(node))),
        "tlsPrivateKeyFile": str(pki.key(pki.kubelet_serving(node))),
        "containerRuntimeEndpoint": f"unix://{paths.CONTAINERD_STATE}/containerd.sock",
        # This VM is cgroup v1 (hybrid); kubelet refuses v1 by default since 1.35.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Pods live below our own cgroup (pre-created in every v1 hierarchy): `down` finds and removes them.
        "cgroupRoot": node.cgroup_root,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        # kube-proxy owns the namespace's iptables; kubelet's own chains are not needed.
        "makeIPTablesUtilChains": False,
        "clusterDomain": paths.CLUSTER_DOMAIN,
        "clusterDNS": [paths.DNS_SERVICE_IP],
        "resolvConf": str(RESOLV_CONF),
        "podLogsDir": str(node.pod_logs_dir),
        "volumePluginDir": str(node.volume_plugin_dir),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        # The disk is shared with the rest of the machine: evict only when it is really full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        # 100 disables image GC: images are imported, never pulled; a collected image would be gone.
        "imageGCHighThresholdPercent": 100,
        "serializeImagePulls": False,
        # Default 110 pods (the hand-made 30 left pods Pending); the /24 pod CIDR holds them.
        "maxPods": 110,
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
    }
    return json.dumps(doc, indent=2) + "\n"


def kube_proxy_config(node: Node | None = None, shape: Shape | None = None) -> str:
    node, shape = node or _first(), shape or Shape()
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(pki.kubeconfig_path(pki.kube_proxy_kubeconfig(node)))},
        "hostnameOverride": node.name,
        # nftables mode needs Debian's `nft` on the PATH inside the node (without it kube-proxy logs
        # "failed to run nft" and programs nothing).
        "mode": shape.proxy_mode,
        "clusterCIDR": shape.cluster_cidr,
        "nodePortAddresses": ["primary"],  # the node IP only (and no warning about accepting on all IPs)
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zeroes make kube-proxy leave the conntrack sysctls alone (some are not per-namespace here).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
    }
    return json.dumps(doc, indent=2) + "\n"


def containerd_config(node: Node | None = None) -> str:
    node = node or _first()
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
# containerd 1.6 (Debian), config format 2. Written by devcluster; see devcluster/config.py.
version = 2
root = "{node.containerd_root}"
# /run is the namespace's own (bound onto {node.run_dir}): shim sockets live below /run/containerd.
state = "{paths.CONTAINERD_STATE}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{paths.CONTAINERD_STATE}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{node.state_dir}/containerd-opt"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # The VM lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, and every sandbox would fail
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{paths.CNI_BIN_DIR}"
  conf_dir = "{node.cni_conf_dir}"
  max_conf_num = 1
"""


def cni_conflist(node: Node | None = None) -> str:
    node = node or _first()
    # containerd's CRI sets up each pod's loopback itself (with the `loopback` plugin from bin_dir), so the
    # list holds only the bridge and portmap.
    doc = {
        "cniVersion": "0.4.0",
        "name": "svcscope-dc",
        "plugins": [
            {
                "type": "bridge",
                "bridge": paths.BRIDGE_IFACE,
                "isGateway": True,
                "ipMasq": False,
                # A pod reaching its own Service may be sent back to itself.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.cni_data_dir),
                    "ranges": [[{"subnet": node.pod_cidr, "gateway": node.pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def resolv_conf() -> str:
    # The upstream of pods with dnsPolicy Default (CoreDNS itself). There is deliberately no nameserver: the
    # network is closed, and CoreDNS forwards nothing.
    return "# devcluster: no upstream DNS, the node's network is closed\noptions ndots:1\n"


def write_all(shape: Shape | None = None) -> None:
    """Write every configuration file into the state directory (per node where they differ)."""
    shape = shape or Shape()
    files: dict[Path, str] = {RESOLV_CONF: resolv_conf()}
    for node in shape.node_list():
        files[kubelet_config_path(node)] = kubelet_config(node)
        files[kube_proxy_config_path(node)] = kube_proxy_config(node, shape)
        files[containerd_config_path(node)] = containerd_config(node)
        files[cni_conflist_path(node)] = cni_conflist(node)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_PROCESSES = ("containerd", "kubelet", "kube-proxy")


def node_labels(node: Node) -> str:
    # Zones round-robin over the nodes; kube-proxy's topology routing (hints) and the scheduler read these.
    return f"{topology.ZONE_LABEL}={node.zone},{topology.REGION_LABEL}={node.region}"


def node_components(bin_dir: Path, node: Node) -> dict[str, Component]:
    """containerd, kubelet and kube-proxy of one node, keyed by their base name."""
    return {
        "containerd": Component(
            node.component("containerd"),
            ("/usr/bin/containerd", "--config", str(containerd_config_path(node))),
            node.netns_path,
        ),
        "kubelet": Component(
            node.component("kubelet"),
            (
                str(bin_dir / "kubelet"),
                f"--config={kubelet_config_path(node)}",
                f"--kubeconfig={pki.kubeconfig_path(pki.kubelet_kubeconfig(node))}",
                f"--root-dir={node.kubelet_root_dir}",
                f"--hostname-override={node.name}",
                f"--node-ip={node.node_ip}",
                f"--node-labels={node_labels(node)}",
            ),
            node.netns_path,
        ),
        "kube-proxy": Component(
            node.component("kube-proxy"),
            (str(bin_dir / "kube-proxy"), f"--config={kube_proxy_config_path(node)}"),
            node.netns_path,
        ),
    }


def components(bin_dir: Path, shape: Shape | None = None) -> dict[str, Component]:
    """Command lines of every process, by name: the control plane, then each node's ("kubelet" ... for the
    first node, "kubelet@NODE" ... for the others). `shape` defaults to the recorded one."""
    shape = shape or topology.current()

    def kube(binary: str, *args: str) -> tuple[str, ...]:
        return (str(bin_dir / binary), *args)

    ca, pki_dir = str(pki.crt(pki.CA)), paths.PKI_DIR
    sa_key, sa_pub = str(pki.SA_KEY), str(pki.SA_PUB)
    cm_kc, sched_kc = str(pki.kubeconfig_path("controller-manager")), str(pki.kubeconfig_path("scheduler"))
    specs = [
        Component(
            "etcd",
            (
                "/usr/bin/etcd",
                "--name",
                paths.NODE_NAME,
                "--data-dir",
                str(paths.ETCD_DATA_DIR),
                "--listen-client-urls",
                paths.ETCD_URL,
                "--advertise-client-urls",
                paths.ETCD_URL,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                f"{paths.NODE_NAME}=http://127.0.0.1:2380",
                "--listen-metrics-urls",
                "http://127.0.0.1:2381",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ),
        ),
        Component(
            "kube-apiserver",
            kube(
                "kube-apiserver",
                f"--etcd-servers={paths.ETCD_URL}",
                "--bind-address=0.0.0.0",
                f"--secure-port={paths.APISERVER_PORT}",
                # Pods reach the apiserver via 198.19.0.1 -> this address (the node IP inside the namespace).
                f"--advertise-address={paths.NODE_IP}",
                f"--service-cluster-ip-range={paths.SERVICE_CIDR}",
                f"--tls-cert-file={pki_dir}/apiserver.crt",
                f"--tls-private-key-file={pki_dir}/apiserver.key",
                f"--client-ca-file={ca}",
                f"--kubelet-client-certificate={pki_dir}/apiserver-kubelet-client.crt",
                f"--kubelet-client-key={pki_dir}/apiserver-kubelet-client.key",
                "--kubelet-preferred-address-types=InternalIP",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer=https://kubernetes.default.svc.{paths.CLUSTER_DOMAIN}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--allow-privileged=true",
                "--profiling=false",
                "--event-ttl=1h",
            ),
        ),
        Component(
            "kube-controller-manager",
            kube(
                "kube-controller-manager",
                f"--kubeconfig={cm_kc}",
                f"--authentication-kubeconfig={cm_kc}",
                f"--authorization-kubeconfig={cm_kc}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={ca}",
                f"--cluster-signing-cert-file={ca}",
                f"--cluster-signing-key-file={pki_dir}/ca.key",
                # Each node's pod CIDR is static, in its CNI config: no per-node CIDR allocation.
                "--allocate-node-cidrs=false",
                f"--service-cluster-ip-range={paths.SERVICE_CIDR}",
                f"--flex-volume-plugin-dir={paths.VOLUME_PLUGIN_DIR}",
                "--profiling=false",
            ),
        ),
        Component(
            "kube-scheduler",
            kube(
                "kube-scheduler",
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--profiling=false",
            ),
        ),
    ]
    result = {spec.name: spec for spec in specs}
    for node in shape.node_list():
        result.update({spec.name: spec for spec in node_components(bin_dir, node).values()})
    return result
