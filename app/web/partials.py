"""htmx fragments: the parts of the list and detail pages that are swapped live.

Pages render them for an ``HX-Request`` (and include them in full pages); streams push them as SSE
events. Each function returns the HTML of one fragment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi.templating import Jinja2Templates

from app.catalog.detail import ServiceDetail
from app.catalog.query import DEFAULT_TYPES, ServiceList, ServiceQuery, SortField, TypeFilter
from app.web.render import fragment


def query_params(query: ServiceQuery, **overrides: object) -> list[tuple[str, str]]:
    """The URL query of a list view (defaults left out), with some values replaced."""
    values: dict[str, object] = {
        "namespace": query.namespace or "",
        "q": query.search,
        "type": _type_values(query.types),
        "sort": query.sort.value if query.sort is not SortField.NAME else "",
        "order": "desc" if query.descending else "",
        "page": query.page if query.page != 1 else "",
        "size": query.page_size,
    }
    values.update(overrides)
    out: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, list):
            out.extend((key, str(v)) for v in value)
        elif value not in ("", None):
            out.append((key, str(value)))
    return out


def _type_values(types: frozenset[TypeFilter]) -> list[str]:
    if not types:
        return [TypeFilter.ALL.value]
    if types == DEFAULT_TYPES:
        return []  # implied
    return sorted(t.value for t in types)


def query_string(query: ServiceQuery, **overrides: object) -> str:
    return urlencode(query_params(query, **overrides))


def list_context(listing: ServiceList, default_size: int) -> dict[str, Any]:
    """What the list templates need: the listing, and ``qs`` to build its links."""

    def qs(**overrides: object) -> str:
        if "size" not in overrides and listing.query.page_size == default_size:
            overrides["size"] = ""  # keep URLs short: the default size is implied
        return query_string(listing.query, **overrides)

    return {"listing": listing, "qs": qs}


def _list_fragment(templates: Jinja2Templates, template: str, listing: ServiceList, default_size: int) -> str:
    return fragment(templates, template, **list_context(listing, default_size))


def list_body(templates: Jinja2Templates, listing: ServiceList, default_size: int) -> str:
    """Table + pagination (what the list stream pushes as event ``rows``)."""
    return _list_fragment(templates, "partials/_service_list_body.html", listing, default_size)


def list_block(templates: Jinja2Templates, listing: ServiceList, default_size: int) -> str:
    """The live list container (with its SSE connection) — what the filter form swaps in."""
    return _list_fragment(templates, "partials/_service_list.html", listing, default_size)


def detail_body(templates: Jinja2Templates, detail: ServiceDetail | None, namespace: str, name: str) -> str:
    """Everything on the detail page that changes live (event ``detail``)."""
    return fragment(templates, "partials/_service_detail.html", d=detail, namespace=namespace, name=name)


def detail_yaml(templates: Jinja2Templates, detail: ServiceDetail | None) -> str:
    """The live object as YAML (event ``yaml``), escaped by the template: it goes into a ``<pre>``."""
    return fragment(templates, "partials/_service_yaml.html", d=detail)
