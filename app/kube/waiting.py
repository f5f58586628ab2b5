"""Who wants to hear that a Kubernetes API call is slow: a context variable, so the code between a
probe run and the API client (``app.probe.remote``, ``app.kube.actions``) needs no extra parameter.

A run sets its callback with :func:`reporting_to` around the work that makes API calls;
``app.kube.client.bounded`` calls it with a note while a call is slow and with ``None`` once it
answered. Nothing here imports the Kubernetes client, so the probe package may use it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

Reporter = Callable[[str | None], None]

_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("api_waiting", default=None)


@contextlib.contextmanager
def reporting_to(reporter: Reporter) -> Iterator[None]:
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        reporter(None)
        _reporter.reset(token)


def report_waiting(note: str | None) -> None:
    reporter = _reporter.get()
    if reporter is not None:
        reporter(note)
