"""Echo backend and client (stdlib only: it runs in the bare Python base image of the devcluster).

`python -m app.echo serve` answers on three ports with the identity of the pod it runs in, taken from the
Downward API environment (POD_NAME, POD_IP, NODE_NAME):

- HTTP (ECHO_HTTP_PORT, 8080): any path, GET/HEAD (other methods get the same reply), HTTP/1.1 keep-alive
  and `Connection: close`; JSON ``{"pod", "ip", "node", "path", "method", "peer"}`` plus an ``X-Pod-Name``
  header.
- TCP (ECHO_TCP_PORT, 9000): on connect one line ``pod=<name> ip=<ip> node=<node> peer=<ip:port>``, then
  echoes its input.
- UDP (ECHO_UDP_PORT, 9001): answers every datagram with that same line.

``peer`` is the client address the pod saw (IP:port; ``[IPv6]:port``): compared with the client's own
address, it shows source NAT.

ECHO_MODE changes what a reply reveals, so that attribution without a pod name can be tested:
``anonymous`` replaces name/ip/node by a token that is stable for a pod (a hash of its name and IP, so it
survives a container restart) and ``identical`` makes every pod answer exactly alike.

`python -m app.echo client` sends a bounded number of requests, each on a new connection (kube-proxy
balances connections, not requests), and prints one line per request as soon as it is done: with
``--format json`` one escaped JSON record (identity, error kind, status, latency, the peer the server saw),
by default the older answering identity or ``ERROR <kind>``. It reads at most a capped prefix of a reply.

Modules: ``identity`` (what a reply says), ``http_wire`` (the server's HTTP/1.1 parsing), ``server`` (the
listeners), ``client`` (the probes and the request loop), ``record`` (the output line, and its parser for
whoever reads it), ``cli`` (the command line). Nothing here may import outside the standard library and
this package: the echo image carries only these files (tests/unit/test_echo.py checks it).
"""

from app.echo.cli import build_parser, main
from app.echo.client import HttpProber, parse_identity, run_client, tcp_once, udp_once
from app.echo.identity import MODES, Identity, Mode
from app.echo.record import ERROR_KINDS, Record, parse_line
from app.echo.server import EchoServer, ServeConfig, serve

__all__ = [
    "ERROR_KINDS",
    "MODES",
    "EchoServer",
    "HttpProber",
    "Identity",
    "Mode",
    "Record",
    "ServeConfig",
    "build_parser",
    "main",
    "parse_identity",
    "parse_line",
    "run_client",
    "serve",
    "tcp_once",
    "udp_once",
]
