"""Command line of `python -m devcluster` (up, down, status, env, kubectl, logs, exec, image, install, and
stop/start/restart of one component)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from devcluster import cluster, components, node, paths, topology

EPILOG = f"""\
Run a command inside a node (its network and mount namespaces), e.g. to look at kube-proxy's rules:
  python -m devcluster exec -- iptables-save -t nat
  python -m devcluster exec --node {paths.NODE_NAME}-2 -- nft list ruleset
From the host, use the admin kubeconfig:  eval "$(python -m devcluster env)"; kubectl get nodes
Logs of the components: {paths.LOG_DIR}/<component>.log  (python -m devcluster logs kubelet [--node NAME])
Several nodes in several zones:  python -m devcluster up --nodes 3 --zones 3 --proxy-mode nftables
A second cluster beside the first:  python -m devcluster --instance NAME up  (or {paths.INSTANCE_ENV}=NAME)
One component:  python -m devcluster restart kube-apiserver;  stop --kill etcd;  stop --freeze kube-proxy
  (a start first frees the component's ports: a stray copy of it is killed; it then waits until healthy)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster",
        description="A real Kubernetes cluster (one node or several) in network namespaces of its own.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--instance",
        metavar="NAME",
        help=f"a separate cluster with its own state, namespaces and host link (default: {paths.INSTANCE_ENV}"
        " or the default instance)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the cluster (no-op if it is up, healthy and of that shape)")
    up.add_argument("--nodes", type=int, help=f"how many nodes (default 1; at most {paths.MAX_NODES})")
    up.add_argument("--zones", type=int, help="zones the nodes are spread over, round-robin (default 1)")
    up.add_argument("--proxy-mode", choices=topology.PROXY_MODES, help="kube-proxy's mode (default iptables)")
    sub.add_parser("down", help="stop every node and remove everything the cluster made")
    sub.add_parser("status", help="what runs and what is unhealthy (exit 1 if anything is)")
    sub.add_parser("env", help="print export lines for KUBECONFIG and PATH")
    sub.add_parser("install", help="install the Debian packages and build/cache the binaries")
    kubectl = sub.add_parser("kubectl", help="run the built kubectl with the admin kubeconfig")
    kubectl.add_argument("args", nargs=argparse.REMAINDER, help="arguments for kubectl")
    logs = sub.add_parser("logs", help="show a component's log")
    logs.add_argument(
        "component",
        choices=cluster.ALL_COMPONENTS,
        metavar="COMPONENT",
        help="one of: " + ", ".join(cluster.ALL_COMPONENTS),
    )
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many of the last lines (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument(
        "--node", metavar="NAME", help="the node's kubelet/kube-proxy/containerd (default: first)"
    )
    exe = sub.add_parser(
        "exec", help="run a command inside a node's namespaces: exec [--node NAME] -- CMD ARGS"
    )
    exe.add_argument("--node", metavar="NAME", help="which node (default: the first, with the control plane)")
    exe.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (after --)")
    component_help = "one of: " + ", ".join(components.NAMES)
    node_help = "the node of a kubelet, kube-proxy or containerd (default: the first)"
    stop = sub.add_parser("stop", help="stop a component and wait until its ports are free")
    stop.add_argument("component", choices=components.NAMES, metavar="COMPONENT", help=component_help)
    stop.add_argument("--node", metavar="NAME", help=node_help)
    how = stop.add_mutually_exclusive_group()
    how.add_argument("--kill", action="store_true", help="SIGKILL at once, as a crash (default: SIGTERM)")
    how.add_argument(
        "--freeze", action="store_true", help="SIGSTOP: it keeps its ports and state, answers nothing"
    )
    start = sub.add_parser(
        "start", help="start components (or thaw frozen ones) after freeing their ports; wait until healthy"
    )
    start.add_argument(
        "component", nargs="+", choices=components.NAMES, metavar="COMPONENT", help=component_help
    )
    start.add_argument("--node", metavar="NAME", help=node_help)
    start.add_argument("--no-wait", action="store_true", help="return once started, before it is healthy")
    restart = sub.add_parser("restart", help="stop, then start a component")
    restart.add_argument("component", choices=components.NAMES, metavar="COMPONENT", help=component_help)
    restart.add_argument("--node", metavar="NAME", help=node_help)
    restart.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    image = sub.add_parser("image", help="build or import the images (pause, base, echo)")
    image.add_argument(
        "action",
        choices=("build", "import"),
        help="build: make the tarballs; import: load them into the node's containerd",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    instance, argv = _take_instance(parser, argv)
    if instance is not None and instance != paths.INSTANCE:
        # Every path is derived from the instance when devcluster is imported: start again with it set.
        os.execvpe(
            sys.executable,
            [sys.executable, "-m", "devcluster", *argv],
            {**os.environ, paths.INSTANCE_ENV: instance},
        )
    # `kubectl` and `exec` pass everything after them through untouched (argparse would eat leading options).
    node_name, argv = split_exec_node(argv)
    if argv[:1] in (["kubectl"], ["exec"]):
        args = parser.parse_args(argv[:1])
        args.args = args.cmd = argv[1:]
        args.node = node_name
    else:
        args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except (cluster.ClusterError, node.ComponentError, topology.ShapeError) as exc:
        print(f"devcluster {args.command}: {exc}", file=sys.stderr)
        return 1


def split_exec_node(argv: list[str]) -> tuple[str | None, list[str]]:
    """`exec --node NAME -- CMD`: (NAME or None, argv without the option). Only right after `exec`, so the
    command's own options are never taken."""
    if argv[:1] == ["exec"] and argv[1:2] == ["--node"] and len(argv) > 2:
        return argv[2], argv[:1] + argv[3:]
    if argv[:1] == ["exec"] and argv[1:2] and argv[1].startswith("--node="):
        return argv[1].removeprefix("--node="), argv[:1] + argv[2:]
    return None, argv


def _take_instance(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str | None, list[str]]:
    """`--instance NAME` before the command: (NAME or None, the rest of argv)."""
    value: str | None = None
    if argv[:1] == ["--instance"]:
        if len(argv) < 2:
            parser.error("--instance: give a name")
        value, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--instance="):
        value, argv = argv[0].removeprefix("--instance="), argv[1:]
    if value is not None:
        try:
            paths.check_instance(value, "--instance")
        except paths.InstanceError as exc:
            parser.error(str(exc))
    return value, argv


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "up":
        given = {k: v for k, v in (("nodes", args.nodes), ("zones", args.zones)) if v is not None}
        if args.proxy_mode is not None:
            given["proxy_mode"] = args.proxy_mode
        # Without flags, `up` keeps (or rebuilds) the recorded shape; a new node count or zone count starts
        # from the defaults for whatever is not given.
        base = topology.recorded() or topology.Shape()
        if given.keys() & {"nodes", "zones"}:
            base = topology.Shape()
        wanted = {**vars(base), **given}
        try:
            shape = topology.Shape(**wanted)
        except topology.ShapeError as exc:
            parser.error(str(exc))
        cluster.up(shape, asked=set(given))
        return 0
    if command == "down":
        problems = cluster.down()
        for problem in problems:
            print(f"devcluster down: left behind: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if command == "status":
        return _status()
    if command == "env":
        print("\n".join(cluster.env_lines()))
        return 0
    if command == "install":
        print(cluster.ensure_installed())
        return 0
    if command == "kubectl":
        kubectl_args = args.args[1:] if args.args[:1] == ["--"] else args.args
        argv = [str(cluster.bin_dir() / "kubectl"), f"--kubeconfig={paths.ADMIN_KUBECONFIG}", *kubectl_args]
        os.execv(argv[0], argv)
    if command == "logs":
        component = args.component
        if args.node is not None:
            target = cluster.find_node(args.node)
            if component in cluster.PER_NODE:
                component = target.component(component)
            elif not target.first:
                parser.error(f"--node {args.node}: {component} runs beside the first node only")
        return _logs(component, args.lines, args.follow)
    if command == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("exec: give the command after `--`, e.g. exec -- ip addr")
        argv = cluster.exec_argv(cmd, args.node)
        os.execvpe(argv[0], argv, cluster.exec_env())
    if command == "image":
        return _image(args.action)
    if command == "stop":
        components.stop(args.component, args.node, kill=args.kill, freeze=args.freeze)
        return 0
    if command == "start":
        components.start(args.component, args.node, wait=not args.no_wait)
        return 0
    if command == "restart":
        components.restart(args.component, args.node, kill=args.kill)
        return 0
    parser.error(f"unknown command {command!r}")
    return 2  # pragma: no cover - parser.error exits


def _status() -> int:
    shape = topology.recorded()
    if shape is not None:
        print(f"{'shape':34} {shape.describe()}")
        for each in shape.node_list():
            print(f"{'node ' + each.name:34} {each.node_ip}, pods {each.pod_cidr}, {each.zone}")
    health = cluster.health()
    for name, state in health.components.items():
        print(f"{name:34} {state}")
    for name, state in health.checks.items():
        print(f"{name:34} {state}")
    if health.problems:
        print("unhealthy: " + "; ".join(health.problems))
        return 1
    print("healthy")
    return 0


def _logs(component: str, lines: int, follow: bool) -> int:
    log = node.log_path(component)
    if not log.exists():
        print(f"devcluster logs: no log for {component} at {log}", file=sys.stderr)
        return 1
    if follow:
        return subprocess.call(["tail", "-n", str(lines), "-F", str(log)])
    print(node.log_tail(component, lines))
    return 0


def _image(action: str) -> int:
    from devcluster import images

    started = time.monotonic()
    if action == "build":
        images.build_all()
    else:
        built = images.build_all()  # pause, base, echo
        for each in topology.current().node_list():  # every node has its own containerd
            images.import_all(images.ctr_cmd(each.containerd_socket), images=built)
            cluster.import_images(cluster.bin_dir(), system=True, into=each)  # and CoreDNS
    print(f"image {action}: done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0
