"""What the devcluster must do for svcscope to be tested on it: kube-proxy routing, affinity, DNS, access
from the host."""

from __future__ import annotations

import collections
import http.client
import ipaddress
import json
import random
import re
import subprocess
import time

import pytest

from tests.e2e.conftest import (
    PROXY_MODE,
    TCP_BANNER_SCRIPT,
    Cluster,
    EchoApp,
    devcluster,
    run_echo_client,
    wait_for,
)

pytestmark = pytest.mark.e2e

REQUESTS = 60


def test_node_is_ready(cluster: Cluster) -> None:
    nodes = cluster.get("nodes")["items"]
    assert len(nodes) == 1
    conditions = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    status = devcluster("status", check=False)
    assert status.returncode == 0, status.stdout


def test_kube_proxy_programs_the_mode_it_was_asked_for(cluster: Cluster, kube_exec_in_netns) -> None:
    # SVCSCOPE_E2E_PROXY_MODE picks the mode (`up --proxy-mode`); the other mode's rules must be absent.
    nat = kube_exec_in_netns("iptables-save", "-t", "nat").stdout
    tables = kube_exec_in_netns("nft", "list", "tables", check=False).stdout
    if PROXY_MODE == "nftables":
        assert "table ip kube-proxy" in tables, tables
        assert "KUBE-SERVICES" not in nat
    else:
        assert "KUBE-SERVICES" in nat
        assert "kube-proxy" not in tables


def _wait_answering(cluster: Cluster, ns: str, pod: str, url: str) -> None:
    # kube-proxy programs a new Service within its sync period: wait for one good answer before measuring.
    wait_for(
        lambda: (
            not run_echo_client(cluster, ns, pod, "--count", "1", "--timeout", "1", "--url", url)[
                0
            ].startswith("ERROR")
        ),
        30,
        f"first answer from {url}",
    )


def test_new_connections_spread_over_pods_and_client_ip_affinity_pins_one(
    cluster: Cluster, namespace: str, deploy_echo, client_pod: str
) -> None:
    spread: EchoApp = deploy_echo(namespace, "echo")
    sticky: EchoApp = deploy_echo(namespace, "sticky", service_spec="sessionAffinity: ClientIP")
    pod_names = {p["metadata"]["name"] for p in cluster.pods(namespace, spread.selector)}

    url = f"http://{spread.cluster_ip}:80/"
    _wait_answering(cluster, namespace, client_pod, url)
    answers = run_echo_client(cluster, namespace, client_pod, "--count", str(REQUESTS), "--url", url)
    counts = collections.Counter(answers)
    assert len(answers) == REQUESTS
    assert set(counts) <= pod_names, counts  # every request answered, each by one of the backends
    assert len(counts) >= 2, f"all {REQUESTS} new connections reached one pod: {counts}"

    sticky_url = f"http://{sticky.cluster_ip}:80/"
    _wait_answering(cluster, namespace, client_pod, sticky_url)
    sticky_answers = run_echo_client(
        cluster, namespace, client_pod, "--count", str(REQUESTS), "--url", sticky_url
    )
    sticky_pods = {p["metadata"]["name"] for p in cluster.pods(namespace, sticky.selector)}
    assert len(sticky_answers) == REQUESTS
    assert len(set(sticky_answers)) == 1, collections.Counter(sticky_answers)
    assert sticky_answers[0] in sticky_pods


def test_custom_cluster_ip_is_honoured(cluster: Cluster, namespace: str) -> None:
    # Pick high in the Service range, where the allocator's random picks rarely land; retry on a clash.
    for _ in range(10):
        wanted = str(ipaddress.ip_address("198.19.250.0") + random.randrange(1, 1200))
        proc = cluster.kubectl(
            "create",
            "service",
            "clusterip",
            "fixed",
            f"--clusterip={wanted}",
            "--tcp=80:8080",
            "-n",
            namespace,
            check=False,
        )
        if proc.returncode == 0:
            break
        assert "already allocated" in proc.stderr, proc.stderr
    else:
        pytest.fail("no free address found for a custom clusterIP")
    assert cluster.get("service", "fixed", "-n", namespace)["spec"]["clusterIP"] == wanted


def test_multi_port_service_routes_each_named_port_to_its_target_port(
    cluster: Cluster, namespace: str, deploy_echo, client_pod: str
) -> None:
    ports = """\
    - {name: web, port: 80, targetPort: http, protocol: TCP}
    - {name: raw, port: 7000, targetPort: 9000, protocol: TCP}
    - {name: dgram, port: 7001, targetPort: udp, protocol: UDP}"""
    app: EchoApp = deploy_echo(namespace, "multi", ports=ports)
    pod_names = {p["metadata"]["name"] for p in cluster.pods(namespace, app.selector)}

    # The named targetPorts resolved to the containers' ports in the EndpointSlice.
    slices = cluster.get("endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=multi")["items"]
    resolved = {p["name"]: p["port"] for s in slices for p in s["ports"]}
    assert resolved == {"web": 8080, "raw": 9000, "dgram": 9001}

    ip = app.cluster_ip
    _wait_answering(cluster, namespace, client_pod, f"http://{ip}:80/")
    # Port 80 speaks HTTP (the echo's 8080), 7000 gives the TCP banner (9000), 7001 the UDP reply (9001): each
    # client mode only parses its own protocol's reply, so an answer proves the port went to the right target.
    http_answers = run_echo_client(
        cluster, namespace, client_pod, "--count", "5", "--url", f"http://{ip}:80/"
    )
    tcp_answers = run_echo_client(cluster, namespace, client_pod, "--count", "5", "--tcp", f"{ip}:7000")
    udp_answers = run_echo_client(cluster, namespace, client_pod, "--count", "5", "--udp", f"{ip}:7001")
    for answers in (http_answers, tcp_answers, udp_answers):
        assert len(answers) == 5 and set(answers) <= pod_names, answers
    exec_args = ("exec", "-n", namespace, client_pod, "--", "python3", "-c", TCP_BANNER_SCRIPT, ip, "7000")
    raw = cluster.kubectl(*exec_args).stdout
    assert raw.startswith("pod="), raw  # the TCP banner, not an HTTP reply: 7000 reached 9000, not 8080


def test_clusterip_ignores_ping_but_answers_tcp(
    cluster: Cluster, namespace: str, deploy_echo, kube_exec_in_netns
) -> None:
    app: EchoApp = deploy_echo(namespace, "pingme", replicas=1)
    pod_ip = cluster.pods(namespace, app.selector)[0]["status"]["podIP"]
    # Control: ping itself works in the node's namespace (a pod IP answers) ...
    ok = kube_exec_in_netns("busybox", "ping", "-c", "1", "-W", "2", pod_ip, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # ... but a ClusterIP is only a DNAT rule for its ports: ICMP echo gets no answer. In nftables mode
    # kube-proxy also drops whatever else is sent to a ClusterIP, which a sender on the node sees at once.
    lost = kube_exec_in_netns("busybox", "ping", "-c", "3", "-W", "1", app.cluster_ip, check=False)
    assert lost.returncode != 0
    if PROXY_MODE == "nftables":
        assert "Operation not permitted" in lost.stderr, lost.stdout + lost.stderr
    else:
        assert "100% packet loss" in lost.stdout, lost.stdout
    banner = wait_for(
        lambda: kube_exec_in_netns("python3", "-c", TCP_BANNER_SCRIPT, app.cluster_ip, "9000").stdout,
        30,
        "TCP answer from the ClusterIP",
    )
    assert banner.startswith("pod=pingme-"), banner


def test_dns_resolves_services_and_headless_services(
    cluster: Cluster, namespace: str, deploy_echo, client_pod: str
) -> None:
    app: EchoApp = deploy_echo(namespace, "named")
    headless: EchoApp = deploy_echo(namespace, "headless", service_spec="clusterIP: None")
    resolve = (
        "import socket,sys; print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, "
        "socket.AF_INET, socket.SOCK_STREAM)})))"
    )

    def lookup(name: str) -> set[str]:
        out = cluster.kubectl(
            "exec", "-n", namespace, client_pod, "--", "python3", "-c", resolve, name
        ).stdout
        return set(out.split())

    fqdn = f"named.{namespace}.svc.cluster.local"
    assert wait_for(lambda: lookup(fqdn) == {app.cluster_ip}, 30, f"{fqdn} -> {app.cluster_ip}")
    assert lookup("named") == {app.cluster_ip}  # the search path of the pod's namespace
    pod_ips = {p["status"]["podIP"] for p in cluster.pods(namespace, headless.selector)}
    assert len(pod_ips) == 3
    headless_fqdn = f"headless.{namespace}.svc.cluster.local"
    assert wait_for(lambda: lookup(headless_fqdn) == pod_ips, 30, f"{headless_fqdn} -> pod IPs")
    assert lookup("kubernetes.default.svc.cluster.local") == {"198.19.0.1"}


def test_logs_exec_and_port_forward_from_the_host(
    cluster: Cluster, namespace: str, deploy_echo, client_pod: str
) -> None:
    app: EchoApp = deploy_echo(namespace, "fwd", replicas=2)
    pod_names = {p["metadata"]["name"] for p in cluster.pods(namespace, app.selector)}

    logs = cluster.kubectl("logs", "-n", namespace, client_pod).stdout
    assert "e2e client ready" in logs
    echo_logs = cluster.kubectl("logs", "-n", namespace, sorted(pod_names)[0]).stdout
    assert f"pod={sorted(pod_names)[0]}" in echo_logs

    out = cluster.kubectl("exec", "-n", namespace, client_pod, "--", "python3", "-c", "print(6 * 7)").stdout
    assert out.strip() == "42"

    forward = subprocess.Popen(
        [
            str(cluster.bin_dir / "kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "port-forward",
            "-n",
            namespace,
            f"svc/{app.name}",
            ":80",
            "--address=127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 8080"
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line
        port = int(match.group(1))
        deadline = time.monotonic() + 10
        answers = []
        for _ in range(5):  # bounded; port-forward picks one pod and sticks to it (kubernetes/kubectl#1416)
            conn = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=max(0.5, deadline - time.monotonic())
            )
            conn.request("GET", "/via-port-forward")
            reply = json.loads(conn.getresponse().read())
            conn.close()
            answers.append(reply["pod"])
            assert reply["path"] == "/via-port-forward"
        assert set(answers) <= pod_names
    finally:
        forward.terminate()
        forward.wait(timeout=10)
        if forward.stdout is not None:
            forward.stdout.close()
