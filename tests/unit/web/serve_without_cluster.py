"""A uvicorn factory for wire tests: the real app with an empty cache and no watchers."""

from __future__ import annotations

from fastapi import FastAPI

from app.config import Settings
from app.main import create_app


def make() -> FastAPI:
    return create_app(Settings(), start_watchers=False)
