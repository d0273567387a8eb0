"""Signing in and out of the console: a login form with its own CSRF token, throttled failures
(finance.access), a session cookie that is HttpOnly, SameSite=Strict and Secure over TLS."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from billing.errors import AccessError, SignInThrottled
from billing.finance.access import (
    SESSION_HOURS,
    csrf_matches,
    principal_for_session,
    sign_in,
    sign_out,
)
from billing.web.auth import ledger_engine
from billing.web.console.render import page, redirect
from billing.web.console.session import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    User,
    checked_form,
    new_login_token,
    set_cookie,
)

router = APIRouter(include_in_schema=False)


def landing(target: str | None) -> str:
    """Where a successful sign-in goes: `next` when it is a path of this site, else Periods."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/periods"


def _login_page(
    request: Request, target: str | None, error: str | None = None, status_code: int = 200
) -> Response:
    token = new_login_token()
    response = page(
        request,
        "login.html",
        None,
        status_code=status_code,
        login_token=token,
        next=landing(target),
        error=error,
    )
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    raw = request.cookies.get(SESSION_COOKIE)
    if raw and principal_for_session(ledger_engine(request), raw, datetime.now(UTC)):
        return redirect(request, landing(next))
    return _login_page(request, next)


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/periods",
) -> Response:
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf_token or None):
        return _login_page(
            request,
            next,
            "the form's security token is missing or out of date: sign in again",
            status_code=403,
        )
    remote = request.client.host if request.client else "unknown"
    try:
        _principal, cookie, _csrf = sign_in(
            ledger_engine(request), name, password, remote, datetime.now(UTC)
        )
    except SignInThrottled as throttled:
        response = _login_page(request, next, str(throttled), status_code=429)
        response.headers["Retry-After"] = str(throttled.retry_after_seconds)
        return response
    except AccessError as refused:
        return _login_page(request, next, str(refused), status_code=401)
    response = redirect(request, landing(next))
    set_cookie(request, response, SESSION_COOKIE, cookie, max_age=SESSION_HOURS * 3600)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, user: User) -> Response:
    await checked_form(request, user)
    raw = request.cookies.get(SESSION_COOKIE)
    if raw:
        sign_out(ledger_engine(request), raw)
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
