"""The web console (``/console``): server-rendered pages over the same data as the REST API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.console.errors import ConsoleErrorPages
from api.console.pages import FormRefused, SignInRequired, form_refused, router, sign_in_required


def install(app: FastAPI) -> None:
    """Serve the console under /console: its pages, its files, and its errors as pages."""
    app.include_router(router)
    app.add_middleware(ConsoleErrorPages)
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(FormRefused, form_refused)
    static = StaticFiles(directory=Path(__file__).parent / "static")
    app.mount("/console/static", static, name="console-static")
