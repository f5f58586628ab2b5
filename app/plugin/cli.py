"""`kubectl svcscope [-n NAMESPACE] [--release NAME] [--port N] [--open]`: the dashboard at a local URL."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import webbrowser
from collections.abc import Sequence
from types import FrameType

from app.plugin import PluginError
from app.plugin.kubectl import Kubectl
from app.plugin.release import SELECTOR, Target, choose, matching, targets
from app.plugin.supervise import Forwarder, free_port, port_free, stamped

PROG = "kubectl svcscope"
DEFAULT_PORT = 8080
START_TIMEOUT_S = 60.0

DESCRIPTION = """\
Find the svcscope dashboard in the cluster (the Service labelled app.kubernetes.io/name=svcscope: in
-n NAMESPACE, else in the current context's namespace, else in any namespace), forward a local port to it
with `kubectl port-forward` on 127.0.0.1, print its URL and keep the forward alive: when it dies (the
dashboard pod replaced, the connection lost) a new one is started within seconds. Ctrl-C stops it."""


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: give 1-65535, or 0 for any free port")
    return port


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: give more than 0 and at most 3600 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument(
        "-n", "--namespace", help="the release's namespace (default: the context's, else all)"
    )
    parser.add_argument("--release", metavar="NAME", help="which release, when there are several")
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"local port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)",
    )
    parser.add_argument("--open", action="store_true", help="open the URL in the browser")
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: kubectl's rules)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "--kubectl", metavar="PATH", default="kubectl", help="kubectl to run (default: PATH's)"
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=START_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long the first forward may take to answer (default {START_TIMEOUT_S:g})",
    )
    return parser


def find_target(kubectl: Kubectl, namespace: str | None, release: str | None) -> Target:
    """The release's Service: in the namespace given, else the context's, else any (see DESCRIPTION)."""
    if namespace:
        found = targets(kubectl.run_json(kubectl.services_argv(namespace, SELECTOR)))
        return choose(found, release, f"in namespace {namespace!r} (-n)")
    context_namespace = kubectl.run(kubectl.context_namespace_argv()).strip()
    if context_namespace:
        found = targets(kubectl.run_json(kubectl.services_argv(context_namespace, SELECTOR)))
        if matching(found, release):
            return choose(found, release, f"in namespace {context_namespace!r} (the context's)")
    try:
        found = targets(kubectl.run_json(kubectl.services_argv(None, SELECTOR)))
    except PluginError as exc:
        if "forbidden" in str(exc).lower():
            raise PluginError(f"{exc}\nname the release's namespace with -n NAMESPACE") from None
        raise
    return choose(found, release, "in any namespace")


def local_port(asked: int) -> int:
    if asked == 0:
        return free_port()
    if not port_free(asked):
        raise PluginError(
            f"port {asked} on 127.0.0.1 is in use: choose another with --port N, or --port 0 for any free one"
        )
    return asked


def _write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = stamped(_write_stderr, "kubectl-svcscope")
    kubectl = Kubectl(args.kubectl, args.kubeconfig, args.context)
    stop = threading.Event()
    forwarder: Forwarder | None = None
    try:
        target = find_target(kubectl, args.namespace, args.release)
        port = local_port(args.port)
        argv_pf = kubectl.port_forward_argv(target.namespace, target.service, port, target.port)
        forwarder = Forwarder(argv_pf, port, log=log)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        log(f"forwarding 127.0.0.1:{port} to {target.describe()} port {target.port}")
        try:
            if not forwarder.start(stop, args.timeout):
                return 0
        except PluginError as exc:
            if "unable to listen" in str(exc):  # taken since it was found free
                raise PluginError(f"{exc}\nport {port} is in use: choose another with --port N") from None
            raise
        print(forwarder.url, flush=True)
        log(f"svcscope is at {forwarder.url} (Ctrl-C to stop)")
        if args.open:
            webbrowser.open(forwarder.url)
        forwarder.supervise(stop)
        log(f"stopped after {forwarder.restarts} restart(s)")
        return 0
    except PluginError as exc:
        print(f"kubectl-svcscope: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the forward started
        return 130
    finally:
        if forwarder is not None:
            forwarder.close()
