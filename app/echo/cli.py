"""`python -m app.echo serve | client …`: the command line of the echo image and of remote probe origins."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence

from app.echo.client import run_client
from app.echo.server import ServeConfig, serve

MAX_COUNT = 100_000  # the client refuses more: every loop here is bounded


def _positive_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"count must be 1..{MAX_COUNT}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.echo",
        description="Echo backend and client for the devcluster (stdlib only: it runs in the bare Python "
        "base image).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="answer HTTP/TCP/UDP with this pod's identity (configured by env)")
    client = sub.add_parser("client", help="send N requests, one output line per request")
    client.add_argument("--count", type=_positive_count, default=1)
    client.add_argument("--url", help="http://HOST:PORT/PATH")
    client.add_argument("--tcp", metavar="HOST:PORT")
    client.add_argument("--udp", metavar="HOST:PORT")
    client.add_argument("--timeout", type=_positive_float, default=2.0, help="per request, seconds")
    client.add_argument("--deadline", type=_positive_float, help="for the whole run, seconds")
    client.add_argument("--keepalive", action="store_true", help="reuse one HTTP connection")
    client.add_argument(
        "--format",
        choices=("lines", "json"),
        default="lines",
        help="json: one JSON record per request (app/echo/record.py); lines: the identity or ERROR <kind>",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(ServeConfig.from_env(os.environ)))
        return 0
    return run_client(args, out=lambda line: print(line, flush=True))
