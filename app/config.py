"""Settings: the one place that reads the environment (prefix ``SVCSCOPE_``)."""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.domain import Origin


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SVCSCOPE_", extra="ignore")

    # -- Kubernetes access
    kubeconfig: str | None = None  # None: in-cluster config if available, else the default kubeconfig
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)  # empty: all namespaces
    watch_timeout_s: int = 300  # server-side timeoutSeconds of one watch request
    watch_inactivity_s: float = (
        90.0  # reconnect if nothing (not even a bookmark, ~1/min) arrived for this long
    )
    watch_backoff_max_s: float = 30.0
    # A consistent read of one Service this often tells a quiet cluster from a dead apiserver or etcd;
    # a watch older than watch_stale_after_s (while that read fails) is shown as stale.
    watch_check_interval_s: float = 5.0
    watch_check_timeout_s: float = 3.0
    watch_stale_after_s: float = 12.0
    cluster_domain: str = "cluster.local"  # for the DNS names shown on a Service's page
    # Set by Kubernetes in every pod: with no kubeconfig configured, use the in-cluster ServiceAccount.
    kubernetes_service_host: str | None = Field(default=None, validation_alias="KUBERNETES_SERVICE_HOST")

    # -- Web
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)  # besides localhost names
    # Signs the CSRF tokens (the chart sets it from a kept Secret; unset: a new one per process start).
    csrf_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf_max_age_s: float = 12 * 3600.0  # a page's CSRF token is refused (403, "reload") after this long
    # Request bounds, checked before anything parses the request (413 / 414 / 431 with a message).
    max_body_bytes: int = 64 * 1024  # every request body, JSON and form (the forms are tiny)
    max_url_bytes: int = 8 * 1024  # path and query
    max_header_bytes: int = 32 * 1024  # all header names and values
    sse_coalesce_s: float = 0.25  # at most one fragment per stream per this interval
    # Live streams (every kind: lists, Service pages, runs) open at once: 503 beyond the total, 429 beyond
    # the per-client count. Through kubectl port-forward every viewer has the same client address.
    sse_max_streams: int = 64
    sse_max_streams_per_client: int = 32
    page_size: int = 50

    # -- Probes
    probe_max_count: int = 10_000
    probe_max_concurrency: int = 256
    # Requests in flight at once across all of the dashboard's own runs. The event loop that sends them also
    # serves the pages: with 128 in flight (4 runs of 32) a page waited 390 ms (p95) on a 2-core node, with
    # 32 it waited 100 ms, and the runs took as long (measured with bench/run_viewers.py).
    probe_max_in_flight: int = Field(32, ge=1, le=1024)
    probe_max_runs_active: int = 4
    probe_runs_kept: int = 50
    probe_max_runs_per_minute: int = 30
    probe_max_timeout_s: float = 30.0  # per request
    probe_run_deadline_s: float = 900.0  # a whole run
    # "Many clients": at most this many probe pods (distinct source IPs) in one fan-out run.
    probe_fanout_max_clients: int = Field(10, ge=1, le=50)
    # Extra probe origins besides the dashboard itself: "probe-pod", "node" (a hostNetwork probe pod) and/or
    # "exec" (they need RBAC).
    probe_origins: Annotated[list[Origin], NoDecode] = Field(default_factory=list)
    probe_pod_image: str = "localhost/svcscope:dev"  # image with `python3 -m app.echo client`
    # -- Run store: probe runs kept on disk (an SQLite file), so they survive restarts. Empty path: runs
    # live in memory only (development, tests). The chart mounts a volume at /var/lib/svcscope.
    store_path: str = "/var/lib/svcscope/runs.db"
    store_max_runs: int = Field(500, ge=1)  # finished runs kept; the oldest beyond this are deleted
    store_max_age_days: float = Field(7.0, gt=0)  # finished runs older than this are deleted
    store_max_mb: int = Field(256, ge=1)  # the file's budget; keep it below the volume's size
    # How long start-up waits for the previous process to let go of the file (an old pod still stopping).
    store_lock_wait_s: float = Field(30.0, ge=0)
    # Let users flip a watched Service's sessionAffinity from its page (needs RBAC patch on services).
    allow_affinity_patch: bool = False
    # Namespaces where Services may be patched and pods exec'd into (the chart's writableNamespaces, which
    # grants those verbs only there); see app.writepolicy. Empty: nowhere.
    writable_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The one namespace probe pods are created in: the release's own (None: nowhere).
    probe_pod_namespace: str | None = None
    # Resources of each probe pod's container (Kubernetes quantities), so that a huge reply cannot grow it.
    probe_pod_cpu_request: str = "100m"
    probe_pod_cpu_limit: str = "500m"
    probe_pod_memory_request: str = "32Mi"
    probe_pod_memory_limit: str = "64Mi"
    # Watches (continuous probing): rate, duration and how many at once are bounded.
    watch_min_rate: float = 1.0
    watch_max_rate: float = 200.0
    watch_max_duration_s: float = 1800.0
    watch_max_timeout_s: float = 5.0  # per request; a stop waits at most this long for requests under way
    watch_max_active: int = 3
    watch_kept: int = 20
    watch_ring_s: int = 1800  # per-second detail kept in memory per watch (the store keeps every second)
    watch_max_window_s: int = 120
    # The dashboard's own pod (Downward API in the chart): shown as the client of "dashboard" probe runs.
    pod_name: str | None = Field(default=None, validation_alias="POD_NAME")
    pod_ip: str | None = Field(default=None, validation_alias="POD_IP")
    # Its namespace: whose search path resolves a Service's bare name in the checks from the dashboard.
    pod_namespace: str | None = Field(default=None, validation_alias="POD_NAMESPACE")
    # Its uid: probe pods name the dashboard pod as their owner, so they go when it goes.
    pod_uid: str | None = Field(default=None, validation_alias="POD_UID")
    # The node it runs on (Downward API spec.nodeName): the client node of its own probe runs.
    node_name: str | None = Field(default=None, validation_alias="NODE_NAME")
    # Watch Nodes (zones, readiness) for the routing rules; off where RBAC does not allow it.
    watch_nodes: bool = True

    @property
    def stream_interval_s(self) -> float:
        """The live streams' coalescing interval as they use it: never below 50 ms, whatever is set."""
        return max(self.sse_coalesce_s, 0.05)

    @field_validator("namespaces", "allowed_hosts", "writable_namespaces", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("probe_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """The extra origins (the dashboard is always one); an unknown name is a configuration error."""
        names = _split_csv(value)
        if not isinstance(names, list):
            return names
        try:
            return [Origin(n.strip()) for n in names if str(n).strip() not in ("", Origin.DASHBOARD)]
        except ValueError as exc:
            raise ValueError(f"SVCSCOPE_PROBE_ORIGINS: {exc}; use probe-pod, node and/or exec") from exc


@lru_cache
def get_settings() -> Settings:
    return Settings()
