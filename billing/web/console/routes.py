"""The console assembled: its static assets, the login, every page and action router, the
redirect to the login page when no one is signed in, and its error page."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from billing.web.console import (
    allocation,
    budgets,
    invoice_actions,
    invoices,
    login,
    orgs,
    periods,
    review,
    runs,
)
from billing.web.console.render import STATIC_FILES, page, redirect
from billing.web.console.session import SESSION_COOKIE, SignInRequired, login_url

ROUTERS = (
    login.router,
    periods.router,
    review.router,
    runs.router,
    allocation.router,
    budgets.router,
    invoices.router,
    invoice_actions.router,
    orgs.router,
)


def error_page(request: Request, status: int, text: str) -> Response:
    """A failure of a console page or form as a page with its one line and a way back."""
    return page(request, "error.html", None, status_code=status, status=status, message=text)


async def sign_in_first(request: Request, error: Exception) -> Response:
    assert isinstance(error, SignInRequired)
    response = redirect(request, login_url(error.back_to))
    if SESSION_COOKIE in request.cookies:  # expired or ended: forget it
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_FILES), name="static")
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(SignInRequired, sign_in_first)
