"""A few GETs against the apiserver from the host, over the host link, as the admin user (stdlib only)."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from devcluster import paths, pki


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.crt(pki.CA)))
    ctx.load_cert_chain(str(pki.crt("admin")), str(pki.key("admin")))
    return ctx


def get(path: str, *, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPSConnection(
        paths.NS_LINK_IP, paths.APISERVER_PORT, context=_context(), timeout=timeout
    )
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def get_json(path: str, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """The object at `path`, or None if the apiserver does not answer 200."""
    status, body = get(path, timeout=timeout)
    if status != 200:
        return None
    data = json.loads(body)
    return data if isinstance(data, dict) else None


def readyz() -> bool:
    return get("/readyz")[0] == 200


def node_ready(name: str = paths.NODE_NAME) -> bool:
    node = get_json(f"/api/v1/nodes/{name}")
    conditions = (node or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def default_service_account() -> bool:
    return get_json("/api/v1/namespaces/default/serviceaccounts/default") is not None


def deployment_available(namespace: str, name: str) -> bool:
    dep = get_json(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    status = (dep or {}).get("status", {})
    return int(status.get("availableReplicas", 0)) >= 1 and int(status.get("updatedReplicas", 0)) >= 1
