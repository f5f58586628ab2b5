"""Certificates, keys and kubeconfigs, made locally with openssl (EC P-256: fast, accepted everywhere).

One CA signs everything; identities follow the names the Node and RBAC authorizers expect. Kubeconfigs embed
their certificates, so each is one self-contained file.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devcluster import paths
from devcluster.sh import CommandError, run
from devcluster.topology import Node, Shape

CA = "ca"
DAYS = "3650"


@dataclass(frozen=True)
class Identity:
    """One certificate: file stem, subject and (for serving certificates) subject alternative names."""

    name: str
    cn: str
    org: str = ""
    server: bool = False
    client: bool = True
    sans: tuple[str, ...] = ()

    def subject(self) -> str:
        return f"/CN={self.cn}" + (f"/O={self.org}" if self.org else "")

    def extensions(self) -> list[str]:
        usages = [u for u, on in (("serverAuth", self.server), ("clientAuth", self.client)) if on]
        ext = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=" + ",".join(usages),
        ]
        if self.sans:
            ext.append("subjectAltName=" + ",".join(self.sans))
        return ext


APISERVER_SANS = (
    f"IP:{paths.NS_LINK_IP}",
    f"IP:{paths.APISERVER_SERVICE_IP}",
    f"IP:{paths.NODE_IP}",
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    f"DNS:kubernetes.default.svc.{paths.CLUSTER_DOMAIN}",
)

IDENTITIES = (
    Identity("apiserver", "kube-apiserver", server=True, client=False, sans=APISERVER_SANS),
    # system:masters: the apiserver may then call any kubelet API without extra RBAC bindings.
    Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", org="system:masters"),
    Identity("admin", "svcscope-admin", org="system:masters"),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    Identity("kubelet", f"system:node:{paths.NODE_NAME}", org="system:nodes"),
    Identity(
        "kubelet-serving",
        paths.NODE_NAME,
        server=True,
        client=False,
        sans=(f"IP:{paths.NODE_IP}", f"DNS:{paths.NODE_NAME}"),
    ),
    Identity("kube-proxy", "system:kube-proxy"),
)

# kubeconfig name -> (identity, server URL). Components inside the namespace use loopback; the admin config is
# the one users and tests take from the host, so it names the host link address.
KUBECONFIGS = {
    "controller-manager": ("controller-manager", paths.APISERVER_LOCAL_URL),
    "scheduler": ("scheduler", paths.APISERVER_LOCAL_URL),
    "kubelet": ("kubelet", paths.APISERVER_LOCAL_URL),
    "kube-proxy": ("kube-proxy", paths.APISERVER_LOCAL_URL),
}
# The other nodes reach the apiserver over the fabric, at the first node's IP (in the certificate's SANs).
APISERVER_FABRIC_URL = f"https://{paths.NODE_IP}:{paths.APISERVER_PORT}"


def kubelet_identity(node: Node) -> str:
    return "kubelet" if node.first else f"kubelet@{node.name}"


def kubelet_serving(node: Node) -> str:
    return "kubelet-serving" if node.first else f"kubelet-serving@{node.name}"


def kubelet_kubeconfig(node: Node) -> str:
    return kubelet_identity(node)


def kube_proxy_kubeconfig(node: Node) -> str:
    return "kube-proxy" if node.first else "kube-proxy-fabric"


def identities(shape: Shape) -> tuple[Identity, ...]:
    """IDENTITIES plus, for every further node, the kubelet's client (Node authorizer: system:node:NAME)
    and serving certificates."""
    extra: list[Identity] = []
    for node in shape.node_list()[1:]:
        extra.append(Identity(kubelet_identity(node), f"system:node:{node.name}", org="system:nodes"))
        extra.append(
            Identity(
                kubelet_serving(node),
                node.name,
                server=True,
                client=False,
                sans=(f"IP:{node.node_ip}", f"DNS:{node.name}"),
            )
        )
    return (*IDENTITIES, *extra)


def kubeconfigs(shape: Shape) -> dict[str, tuple[str, str]]:
    found = dict(KUBECONFIGS)
    for node in shape.node_list()[1:]:
        found[kubelet_kubeconfig(node)] = (kubelet_identity(node), APISERVER_FABRIC_URL)
        found[kube_proxy_kubeconfig(node)] = ("kube-proxy", APISERVER_FABRIC_URL)
    return found


def crt(name: str) -> Path:
    return paths.PKI_DIR / f"{name}.crt"


def key(name: str) -> Path:
    return paths.PKI_DIR / f"{name}.key"


def kubeconfig_path(name: str) -> Path:
    return paths.ADMIN_KUBECONFIG if name == "admin" else paths.CONFIG_DIR / f"{name}.kubeconfig"


SA_KEY = paths.PKI_DIR / "sa.key"
SA_PUB = paths.PKI_DIR / "sa.pub"

_NEW_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def req_argv(name: str, subject: str, extensions: Sequence[str], *, signed_by_ca: bool) -> list[str]:
    """openssl argv that makes a new key and its certificate in one step (self-signed for the CA itself)."""
    signer = ["-CA", str(crt(CA)), "-CAkey", str(key(CA))] if signed_by_ca else []
    argv = ["openssl", "req", "-x509", *signer, *_NEW_EC_KEY, "-days", DAYS, "-subj", subject]
    argv += ["-keyout", str(key(name)), "-out", str(crt(name))]
    for ext in extensions:
        argv += ["-addext", ext]
    return argv


CA_EXTENSIONS = (
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
)


def generate(shape: Shape | None = None) -> None:
    """Make the CA, every identity, the service-account key pair and the kubeconfigs (skips what exists)."""
    shape = shape or Shape()
    paths.PKI_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    if not crt(CA).exists():
        run(req_argv(CA, "/CN=svcscope-devcluster-ca", CA_EXTENSIONS, signed_by_ca=False))
    # openssl runs are independent once the CA exists: run them side by side (about 20 ms each).
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    for ident in identities(shape):
        if not crt(ident.name).exists():
            argv = req_argv(ident.name, ident.subject(), ident.extensions(), signed_by_ca=True)
            procs.append(
                (
                    ident.name,
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
    if not SA_KEY.exists():
        run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(SA_KEY)])
        run(["openssl", "ec", "-in", str(SA_KEY), "-pubout", "-out", str(SA_PUB)])
    for name, proc in procs:
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise CommandError(f"openssl could not make the {name} certificate: {err.strip()}")
    ca = crt(CA).read_bytes()
    for name, (user, server) in {**kubeconfigs(shape), "admin": ("admin", paths.APISERVER_HOST_URL)}.items():
        target = kubeconfig_path(name)
        text = kubeconfig(
            server=server, ca=ca, cert=crt(user).read_bytes(), key=key(user).read_bytes(), user=user
        )
        target.write_text(text)
        target.chmod(0o600)


def kubeconfig(*, server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    """A one-cluster, one-user kubeconfig (JSON, which every YAML reader accepts)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": paths.NETNS, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [{"name": paths.NETNS, "context": {"cluster": paths.NETNS, "user": user}}],
        "current-context": paths.NETNS,
    }
    return json.dumps(doc, indent=2) + "\n"
