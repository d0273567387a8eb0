"""Who may use the console and the API, in the ledger: users, hashed tokens, sessions and the
sign-in attempts that slow down guessing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlmodel import Session, col

from billing.db.tables import ApiToken, ConsoleUser, LoginAttempt, WebSession


def user_named(session: Session, name: str) -> ConsoleUser | None:
    user: ConsoleUser | None = session.execute(
        select(ConsoleUser).where(col(ConsoleUser.name) == name)
    ).scalar_one_or_none()
    return user


def count_users(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(ConsoleUser)).scalar_one())


def live_token(session: Session, token_hash: str) -> ApiToken | None:
    """The unrevoked token with this hash."""
    token: ApiToken | None = session.execute(
        select(ApiToken).where(
            col(ApiToken.token_hash) == token_hash, col(ApiToken.revoked_at).is_(None)
        )
    ).scalar_one_or_none()
    return token


def mark_token_used(session: Session, token_id: int, now: datetime) -> None:
    session.execute(update(ApiToken).where(col(ApiToken.id) == token_id).values(last_used_at=now))


def recent_failures(
    session: Session, *, name: str, remote: str, since: datetime
) -> tuple[int, datetime | None]:
    """Failed sign-ins for the name or from the address since `since` (after the last success
    of that name), and when the latest was."""
    last_success = session.execute(
        select(func.max(col(LoginAttempt.at))).where(
            col(LoginAttempt.name) == name, col(LoginAttempt.succeeded).is_(True)
        )
    ).scalar_one_or_none()
    start = max(since, last_success) if last_success is not None else since
    count, latest = session.execute(
        select(func.count(), func.max(col(LoginAttempt.at))).where(
            (col(LoginAttempt.name) == name) | (col(LoginAttempt.remote) == remote),
            col(LoginAttempt.succeeded).is_(False),
            col(LoginAttempt.at) > start,
        )
    ).one()
    return int(count), latest


def record_attempt(
    session: Session, *, name: str, remote: str, succeeded: bool, now: datetime
) -> None:
    session.add(LoginAttempt(name=name[:200], remote=remote[:64], succeeded=succeeded, at=now))


def session_by_hash(session: Session, token_hash: str, now: datetime) -> WebSession | None:
    """The unexpired session with this cookie hash, seen now."""
    found: WebSession | None = session.execute(
        select(WebSession).where(
            col(WebSession.token_hash) == token_hash, col(WebSession.expires_at) > now
        )
    ).scalar_one_or_none()
    if found is not None:
        found.last_seen_at = now
    return found


def end_sessions(
    session: Session, *, token_hash: str | None = None, user_id: int | None = None
) -> None:
    """Delete a session (sign out), or every session of a user (disabled, password changed)."""
    query = delete(WebSession)
    if token_hash is not None:
        query = query.where(col(WebSession.token_hash) == token_hash)
    if user_id is not None:
        query = query.where(col(WebSession.user_id) == user_id)
    session.execute(query)


def revoke_token(session: Session, token_id: int, now: datetime) -> bool:
    """Revoke a token by id; False when there is no such live token."""
    result = session.execute(
        update(ApiToken)
        .where(col(ApiToken.id) == token_id, col(ApiToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
