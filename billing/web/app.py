"""The web application: `create_app(settings)` serves the finance console (/, server-rendered
pages) and the REST API under /api/v1 (its OpenAPI document at /api/v1/openapi.json) over one
ledger engine opened at startup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing.config import Settings
from billing.db.engine import open_ledger
from billing.web import errors
from billing.web.api import router
from billing.web.console import routes as console

API_DESCRIPTION = """\
The MKA1 billing ledger: invoices, runs, periods, orgs and credit notes, and finance's actions
on them, each through the same service function as its `billing` command.

Authenticate with `Authorization: Bearer <token>` (`billing tokens create NAME --role R`).
viewer: read; approver: also finalize, hold, release, adjust, credit, resend, send emails;
admin: also void. Money is always a decimal string at the currency's minor unit, never a
JSON number; times are ISO 8601 in UTC. Errors are `{"error": "<one line>"}`.
"""


# Sent with every answer: a browser never sniffs JSON into HTML, and nothing is cached.
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class SafeHeaders:
    """Adds SAFE_HEADERS to every HTTP response (a plain ASGI middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SAFE_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings) -> FastAPI:
    """The app for these settings; the ledger (migrated when BILLING_AUTO_MIGRATE is on) is
    opened when it starts and disposed when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = open_ledger(settings)
        try:
            yield
        finally:
            app.state.engine.dispose()

    app = FastAPI(
        title="MKA1 billing",
        description=API_DESCRIPTION,
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # the interactive docs load their scripts from a CDN: none are served
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app, html=console.error_page)
    app.add_middleware(SafeHeaders)
    app.include_router(router)
    console.install(app)
    return app
