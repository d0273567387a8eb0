"""Console sign-in state: the session cookie to a signed-in user, CSRF on every form, roles
checked on the server, and the login form's own double-submit token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from billing.errors import AccessError
from billing.finance.access import Principal, csrf_matches, principal_for_session
from billing.states import Role
from billing.web.auth import ledger_engine

SESSION_COOKIE = "billing_session"
LOGIN_CSRF_COOKIE = "billing_login_csrf"
CSRF_FIELD = "csrf_token"


class SignInRequired(Exception):
    """No live session: the console answers with a redirect to the login page."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


class FormRefused(AccessError):
    """A form without its session's CSRF token (403)."""


@dataclass(frozen=True)
class SignedIn:
    """The signed-in user of this request and the CSRF token its forms must carry."""

    principal: Principal
    csrf: str

    def may(self, needed: Role) -> bool:
        return self.principal.may(needed)


def secure_cookies(request: Request) -> bool:
    """Cookies are Secure when the console is reached over TLS (directly or, with uvicorn's
    --proxy-headers, through a proxy that says so)."""
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, **extra: int) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path="/",
        **extra,  # type: ignore[arg-type]
    )


def back_to(request: Request) -> str:
    """Where to return after signing in: this page's path and query (same site only)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return target if target.startswith("/") and not target.startswith("//") else "/"


def login_url(target: str) -> str:
    return "/login" + (f"?next={quote(target, safe='')}" if target not in ("", "/") else "")


def signed_in(request: Request) -> SignedIn:
    """The session of this request, or SignInRequired (a redirect to the login page)."""
    raw = request.cookies.get(SESSION_COOKIE)
    found = principal_for_session(ledger_engine(request), raw, datetime.now(UTC)) if raw else None
    if found is None:
        raise SignInRequired(back_to(request))
    principal, csrf = found
    request.state.principal = principal
    return SignedIn(principal, csrf)


User = Annotated[SignedIn, Depends(signed_in)]


def require_role(user: SignedIn, needed: Role) -> None:
    """Refuse (403) a user whose role does not allow `needed`; checked on the server whatever
    the page showed."""
    if not user.may(needed):
        raise AccessError(
            f"this needs the {needed} role; {user.principal.name} has the {user.principal.role} "
            "role (an admin can change it with billing users add)"
        )


async def checked_form(request: Request, user: SignedIn) -> FormData:
    """The posted form, once its CSRF token matches the session's (403 otherwise)."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not csrf_matches(user.csrf, given if isinstance(given, str) else None):
        raise FormRefused(
            "the form's security token is missing or out of date: reload the page and try again"
        )
    return form


def new_login_token() -> str:
    return secrets.token_urlsafe(32)
