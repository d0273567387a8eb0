"""The console's pages: one Jinja2 environment over templates/console (autoescaped), its
filters for money and times, and the answers every route gives (a page, a redirect, an error)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import quote, unquote

from babel.numbers import format_decimal
from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse, RedirectResponse

from billing.config import Settings
from billing.statements import formatting
from billing.statements.pdf import SHIPPED_TEMPLATES
from billing.web.console.session import CSRF_FIELD, SignedIn, set_cookie

NOTICE_COOKIE = "billing_notice"

CONSOLE_TEMPLATES = SHIPPED_TEMPLATES / "console"
STATIC_FILES = CONSOLE_TEMPLATES / "static"

# Sent with every console page: scripts, styles and frames from this origin only (no inline
# script can run even if markup slipped through), never framed by another site.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-src 'self'; object-src 'self'; frame-ancestors 'self'; form-action 'self'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
}

environment = Environment(
    loader=FileSystemLoader(CONSOLE_TEMPLATES),
    autoescape=True,  # every page escapes ids, names and reasons, whatever they hold
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=StrictUndefined,
)
templates = Jinja2Templates(env=environment)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def money(amount: Decimal | None, currency: str, locale: str = "en_US") -> str:
    """$1,234.56 at the currency's minor unit; an empty cell for None."""
    if amount is None:
        return ""
    return formatting.money(amount, currency, locale)


def quantity(value: Decimal | None, locale: str = "en_US") -> str:
    """A quantity for reading: grouped, at most 4 decimals, no trailing zeros (1,586.8692);
    the exact value stays in the CSV."""
    if value is None:
        return ""
    rounded = value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return str(format_decimal(rounded, format="#,##0.####", locale=locale))


def when(moment: datetime | None) -> str:
    """2026-11-03 14:05 UTC; empty for None."""
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def path_part(text: str) -> str:
    """An id as one path segment (slashes and all escaped)."""
    return quote(str(text), safe="")


environment.filters["money"] = money
environment.filters["when"] = when
environment.filters["quantity"] = quantity
environment.filters["path_part"] = path_part
environment.globals["CSRF_FIELD"] = CSRF_FIELD


def page(
    request: Request,
    name: str,
    user: SignedIn | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A console page: `name` under templates/console with the signed-in user (None on the
    login page), the issuer's name and the flash message carried in the query (`?done=`)."""
    settings = _settings(request)
    response: HTMLResponse = templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "issuer_name": settings.issuer_name,
            "locale": settings.locale,
            "done": unquote(request.cookies.get(NOTICE_COOKIE, "")) or None,
            **context,
        },
        status_code=status_code,
        headers=PAGE_HEADERS,
    )
    if NOTICE_COOKIE in request.cookies:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response


def redirect(request: Request, target: str, done: str | None = None) -> RedirectResponse:
    """303 to `target` (a path of this console); `done` is a one-line message the next page
    shows once (kept in a short-lived cookie, so no link can make the console say anything)."""
    response = RedirectResponse(target, status_code=303)
    if done:
        set_cookie(request, response, NOTICE_COOKIE, quote(done[:300], safe=""), max_age=60)
    return response
