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
    watch_inactivity_s: float = 330.0  # reconnect if nothing (not even a bookmark) arrived for this long
    watch_backoff_max_s: float = 30.0
    cluster_domain: str = "cluster.local"  # for the DNS names shown on a Service's page
    # Set by Kubernetes in every pod: with no kubeconfig configured, use the in-cluster ServiceAccount.
    kubernetes_service_host: str | None = Field(default=None, validation_alias="KUBERNETES_SERVICE_HOST")

    # -- Web
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)  # besides localhost names
    csrf_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32))
    sse_coalesce_s: float = 0.25  # at most one fragment per stream per this interval
    page_size: int = 50

    # -- Probes
    probe_max_count: int = 10_000
    probe_max_concurrency: int = 256
    probe_max_runs_active: int = 4
    probe_runs_kept: int = 50
    probe_max_runs_per_minute: int = 30
    probe_max_timeout_s: float = 30.0  # per request
    probe_run_deadline_s: float = 900.0  # a whole run
    # Extra probe origins besides the dashboard itself: "probe-pod" and/or "exec" (they need RBAC).
    probe_origins: Annotated[list[Origin], NoDecode] = Field(default_factory=list)
    probe_pod_image: str = "localhost/svcscope:dev"  # image with `python3 -m app.echo client`
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
    # Its uid: probe pods name the dashboard pod as their owner, so they go when it goes.
    pod_uid: str | None = Field(default=None, validation_alias="POD_UID")

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
            raise ValueError(f"SVCSCOPE_PROBE_ORIGINS: {exc}; use probe-pod and/or exec") from exc


@lru_cache
def get_settings() -> Settings:
    return Settings()
