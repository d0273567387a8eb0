"""Every failure as `{"error": "<one line>"}`: expected ones (BillingError) with the 4xx that
fits them, malformed requests with 422, anything else as a 500 whose traceback stays in the log."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

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


def error_response(status: int, text: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(text)}, status_code=status, headers=headers)


async def billing_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BillingError)
    return error_response(status_of(error), str(error))


async def invalid_request(_request: Request, error: Exception) -> JSONResponse:
    """422 naming each field and what is wrong with it, never echoing what was sent."""
    assert isinstance(error, RequestValidationError)
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()))
        problems.append(f"{where}: {problem.get('msg', 'invalid')}")
    return error_response(422, "; ".join(problems) or "the request is not valid")


async def http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, str(error.detail), dict(error.headers or {}))


async def unexpected(request: Request, error: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal error: the server's log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(BillingError, billing_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
