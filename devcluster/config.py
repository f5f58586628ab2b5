"""Configuration files and command lines of the node's components (pure: text in, text out).

The settings that matter on these VMs come from DEVCLUSTER-FACTS.md; each is commented where it is set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from devcluster import paths, pki

PAUSE_IMAGE = "localhost/pause:3.10"

KUBELET_CONFIG = paths.CONFIG_DIR / "kubelet.json"
KUBE_PROXY_CONFIG = paths.CONFIG_DIR / "kube-proxy.json"
CONTAINERD_CONFIG = paths.CONFIG_DIR / "containerd.toml"
CNI_CONFLIST = paths.CNI_CONF_DIR / "10-svcscope-dc.conflist"
RESOLV_CONF = paths.CONFIG_DIR / "resolv.conf"
CNI_DATA_DIR = paths.STATE_DIR / "cni" / "networks"


@dataclass(frozen=True)
class Component:
    """One long-running process of the node: its name (also of its log and PID file) and command line."""

    name: str
    argv: tuple[str, ...]


def kubelet_config() -> str:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.crt(pki.CA))},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki.crt("kubelet-serving")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-serving")),
        "containerRuntimeEndpoint": f"unix://{paths.CONTAINERD_STATE}/containerd.sock",
        # This VM is cgroup v1 (hybrid); kubelet refuses v1 by default since 1.35.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Pods live below our own cgroup (pre-created in every v1 hierarchy): `down` finds and removes them.
        "cgroupRoot": paths.CGROUP_ROOT,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        # kube-proxy owns the namespace's iptables; kubelet's own chains are not needed.
        "makeIPTablesUtilChains": False,
        "clusterDomain": paths.CLUSTER_DOMAIN,
        "clusterDNS": [paths.DNS_SERVICE_IP],
        "resolvConf": str(RESOLV_CONF),
        "podLogsDir": str(paths.POD_LOGS_DIR),
        "volumePluginDir": str(paths.VOLUME_PLUGIN_DIR),
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


def kube_proxy_config() -> str:
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(pki.kubeconfig_path("kube-proxy"))},
        "hostnameOverride": paths.NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": paths.POD_CIDR,
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


def containerd_config() -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
# containerd 1.6 (Debian), config format 2. Written by devcluster; see devcluster/config.py.
version = 2
root = "{paths.CONTAINERD_ROOT}"
# /run is the namespace's own (bound onto {paths.NS_RUN_DIR}): shim sockets live below /run/containerd.
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
  path = "{paths.STATE_DIR}/containerd-opt"

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
  conf_dir = "{paths.CNI_CONF_DIR}"
  max_conf_num = 1
"""


def cni_conflist() -> str:
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
                    "dataDir": str(CNI_DATA_DIR),
                    "ranges": [[{"subnet": paths.POD_CIDR, "gateway": paths.POD_GATEWAY}]],
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


def write_all() -> None:
    """Write every configuration file into the state directory."""
    files: dict[Path, str] = {
        KUBELET_CONFIG: kubelet_config(),
        KUBE_PROXY_CONFIG: kube_proxy_config(),
        CONTAINERD_CONFIG: containerd_config(),
        CNI_CONFLIST: cni_conflist(),
        RESOLV_CONF: resolv_conf(),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def components(bin_dir: Path) -> dict[str, Component]:
    """Command lines of the node's processes, in start order (all run inside the node's namespaces)."""

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
        Component("containerd", ("/usr/bin/containerd", "--config", str(CONTAINERD_CONFIG))),
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
                # One node, one static pod CIDR from the CNI config: no per-node CIDR allocation.
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
        Component(
            "kubelet",
            kube(
                "kubelet",
                f"--config={KUBELET_CONFIG}",
                f"--kubeconfig={pki.kubeconfig_path('kubelet')}",
                f"--root-dir={paths.KUBELET_ROOT_DIR}",
                f"--hostname-override={paths.NODE_NAME}",
                f"--node-ip={paths.NODE_IP}",
            ),
        ),
        Component("kube-proxy", kube("kube-proxy", f"--config={KUBE_PROXY_CONFIG}")),
    ]
    return {spec.name: spec for spec in specs}
