"""Every failure as one line: `{"error": "<one line>"}` under /api, the console's error page
elsewhere; expected ones (BillingError) with the 4xx that fits them, malformed requests with 422,
anything else as a 500 whose traceback stays in the log."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from billing.errors import (
    AccessError,
    BillingError,
    ConfigError,
    InvoiceStateError,
    NotFound,
    OutputError,
    PeriodBusy,
    StorageError,
    UsageError,
)

log = logging.getLogger(__name__)

# The most specific class that matches decides; a plain BillingError is bad input (422).
STATUS_OF: tuple[tuple[type[BillingError], int], ...] = (
    (NotFound, 404),
    (InvoiceStateError, 409),
    (PeriodBusy, 409),
    (AccessError, 403),
    (ConfigError, 500),
    (StorageError, 503),
    (OutputError, 500),
    (UsageError, 502),
)


def status_of(error: BillingError) -> int:
    for kind, status in STATUS_OF:
        if isinstance(error, kind):
            return status
    return 422


def one_line(text: str) -> str:
    """The message as it is (JSON escapes whatever an id or reason in it holds)."""
    return text.strip() or "error"


# (request, status, one line) -> the console's error page; set by install()
HtmlPage = Callable[[Request, int, str], Response]


def error_response(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(text)}, status_code=status, headers=headers)


def answer(
    request: Request, status: int, text: str, headers: dict[str, str] | None = None
) -> Response:
    """JSON under /api (and wherever no console is installed), else the console's page."""
    html: HtmlPage | None = getattr(request.app.state, "error_page", None)
    if html is None or request.url.path.startswith("/api/"):
        return error_response(status, text, headers)
    response = html(request, status, one_line(text))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


async def billing_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, BillingError)
    return answer(request, status_of(error), str(error))


async def invalid_request(request: Request, error: Exception) -> Response:
    """422 naming each field and what is wrong with it, never echoing what was sent."""
    assert isinstance(error, RequestValidationError)
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()))
        problems.append(f"{where}: {problem.get('msg', 'invalid')}")
    return answer(request, 422, "; ".join(problems) or "the request is not valid")


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return answer(request, error.status_code, str(error.detail), dict(error.headers or {}))


async def unexpected(request: Request, error: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return answer(request, 500, "internal error: the server's log has the details")


def install(app: FastAPI, html: HtmlPage | None = None) -> None:
    """The handlers; `html` renders failures of the console's pages (None: JSON everywhere)."""
    app.state.error_page = html
    app.add_exception_handler(BillingError, billing_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
