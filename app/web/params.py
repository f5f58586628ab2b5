"""Path and query parameter types shared by the routers: one definition of each name rule."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import StringConstraints

from app.domain import DNS_LABEL, DNS_SUBDOMAIN, LABEL_MAX, SUBDOMAIN_MAX
from app.probe.run import RUN_ID_PATTERN

# Namespaces and Service names are DNS-1123 labels: anything else is a 422, not a lookup.
NamespacePath = Annotated[str, Path(min_length=1, max_length=LABEL_MAX, pattern=DNS_LABEL)]
NamePath = Annotated[str, Path(min_length=1, max_length=LABEL_MAX, pattern=DNS_LABEL)]
NameQuery = Annotated[str, Query(min_length=1, max_length=LABEL_MAX, pattern=DNS_LABEL)]
OptionalNameQuery = Annotated[str, Query(max_length=LABEL_MAX, pattern=r"^$|" + DNS_LABEL)]
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id")]
# The same rules for fields of request bodies.
Name = Annotated[str, StringConstraints(min_length=1, max_length=LABEL_MAX, pattern=DNS_LABEL)]
PodName = Annotated[str, StringConstraints(max_length=SUBDOMAIN_MAX, pattern=DNS_SUBDOMAIN)]
