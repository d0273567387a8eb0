"""Who is calling: `Authorization: Bearer <token>` to a Principal (401 otherwise), and the role
an endpoint needs (403 otherwise); checked on the server for every request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from billing.finance.access import Principal, principal_for_token
from billing.states import Role

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `billing tokens create NAME --role viewer|approver|admin`.",
)


def ledger_engine(request: Request) -> Engine:
    """The app's one engine, opened at startup."""
    engine: Engine = request.app.state.engine
    return engine


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The token's principal; 401 with `WWW-Authenticate: Bearer` when the header is missing,
    is not a bearer token, or names no live token (the token itself is never echoed)."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status_code=401,
            detail="sign in: send Authorization: Bearer TOKEN (billing tokens create makes one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = principal_for_token(ledger_engine(request), credentials.credentials, datetime.now(UTC))
    if found is None:
        raise HTTPException(
            status_code=401,
            detail="the bearer token is unknown or revoked (billing tokens list shows live ones)",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request.state.principal = found
    return found


Caller = Annotated[Principal, Depends(principal)]


def require(needed: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets through only principals whose role allows `needed` (403)."""

    def check(who: Caller) -> Principal:
        if not who.role.allows(needed):
            raise HTTPException(
                status_code=403,
                detail=f"this needs the {needed} role; {who.name} has the {who.role} role",
            )
        return who

    return check


Approver = Annotated[Principal, Depends(require(Role.APPROVER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
