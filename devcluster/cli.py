"""Command line: `python -m devcluster up|down|status|env|kubectl|logs|exec|image|install`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from devcluster import cluster, node, paths

EPILOG = f"""\
Run a command inside the node (its network and mount namespaces), e.g. to look at kube-proxy's rules:
  python -m devcluster exec -- iptables-save -t nat
From the host, use the admin kubeconfig:  eval "$(python -m devcluster env)"; kubectl get nodes
Logs of the components: {paths.LOG_DIR}/<component>.log  (python -m devcluster logs kubelet)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster",
        description="A real single-node Kubernetes cluster in its own network namespace.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="start the node (no-op if it is up and healthy)")
    sub.add_parser("down", help="stop the node and remove everything it made")
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
    exe = sub.add_parser("exec", help="run a command inside the node's namespaces: exec -- CMD ARGS")
    exe.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (after --)")
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
    # `kubectl` and `exec` pass everything after them through untouched (argparse would eat leading options).
    if argv[:1] in (["kubectl"], ["exec"]):
        args = parser.parse_args(argv[:1])
        args.args = args.cmd = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except (cluster.ClusterError, node.ComponentError) as exc:
        print(f"devcluster {args.command}: {exc}", file=sys.stderr)
        return 1


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "up":
        cluster.up()
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
        return _logs(args.component, args.lines, args.follow)
    if command == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("exec: give the command after `--`, e.g. exec -- ip addr")
        argv = cluster.exec_argv(cmd)
        os.execvpe(argv[0], argv, cluster.exec_env())
    if command == "image":
        return _image(args.action)
    parser.error(f"unknown command {command!r}")
    return 2  # pragma: no cover - parser.error exits


def _status() -> int:
    health = cluster.health()
    for name, state in health.components.items():
        print(f"{name:26} {state}")
    for name, state in health.checks.items():
        print(f"{name:26} {state}")
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
        images.import_all()  # pause, base, echo
        cluster.import_images(cluster.bin_dir(), system=True)  # and CoreDNS
    print(f"image {action}: done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0
