"""FastAPI dependency aliases: the web layer's only way to reach settings and shared state.

Every dependency here is ``async def``, though none awaits: FastAPI runs a plain ``def`` dependency in its
thread pool, and each such hop waits for a worker thread and then for the event loop again. While probe
runs keep the loop busy, a page with four plain dependencies waited for eight turns of a saturated loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from app.config import Settings
from app.kube.cache import ServiceCache
from app.state import AppState


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]


# -- shared state
def _state(request: Request) -> AppState:
    state: AppState = request.app.state.svc
    return state


async def get_state(request: Request) -> AppState:
    return _state(request)


async def get_cache(request: Request) -> ServiceCache:
    return _state(request).cache


StateDep = Annotated[AppState, Depends(get_state)]
CacheDep = Annotated[ServiceCache, Depends(get_cache)]
