"""Which protocol the probe form preselects for a Service port."""

from __future__ import annotations

import pytest

from app.catalog.reach import probe_protocol
from app.domain import Protocol, ServicePort


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (ServicePort("udp", 9001, 9001, Protocol.UDP), "UDP"),
        (ServicePort("dns", 53, 53, Protocol.UDP, app_protocol="http"), "UDP"),  # UDP carries no HTTP/1
        (ServicePort("tcp", 9000, 9000), "TCP"),
        (ServicePort("http", 80, 8080), "HTTP"),
        (ServicePort("http-metrics", 9100, 9100), "HTTP"),
        (ServicePort("grpc", 9002, 9002, app_protocol="kubernetes.io/h2c"), "HTTP"),
        (ServicePort("http", 5432, 5432, app_protocol="postgresql"), "TCP"),  # appProtocol wins over the name
        (ServicePort(None, 80, 8080), "HTTP"),
        (ServicePort(None, 6379, 6379), "TCP"),
        (ServicePort("sctp", 9, 9, Protocol.SCTP), "TCP"),
    ],
)
def test_probe_protocol(port: ServicePort, expected: str) -> None:
    assert probe_protocol(port) == expected
