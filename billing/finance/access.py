"""Who may use the console and the REST API: users with argon2-hashed passwords, bearer tokens
stored as their SHA-256, sessions with a CSRF token, and sign-ins slowed after failures."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from billing.config import Settings
from billing.db.access import (
    count_users,
    end_sessions,
    live_token,
    mark_token_used,
    recent_failures,
    record_attempt,
    revoke_token,
    session_by_hash,
    user_named,
)
from billing.db.engine import existing_ledger, ledger
from billing.db.locks import write_transaction
from billing.db.tables import ApiToken, ConsoleUser, WebSession
from billing.errors import AccessError, SignInThrottled
from billing.states import Role

Clock = Callable[[], datetime]
TOKEN_PREFIX = "bk_"  # noqa: S105 - the mark of our tokens, not a secret
MIN_PASSWORD_LENGTH = 12
SESSION_HOURS = 12
# Failed sign-ins (by name or by address) within this window count; from the FREE_FAILURES-th
# on, each must wait twice as long as the one before (1 s, 2 s, 4 s ... at most 15 minutes).
FAILURE_WINDOW = timedelta(minutes=15)
FREE_FAILURES = 3
MAX_WAIT_SECONDS = 900
# A token's last use is written at most this often: checking a token is a read, so an API
# request does not queue behind a close's long write transaction on SQLite for every call.
LAST_USE_RESOLUTION = timedelta(minutes=1)

_hasher = PasswordHasher()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    """Who is acting: a console user or an API token, with its role."""

    name: str
    role: Role
    kind: str  # "user" | "token"

    @property
    def actor(self) -> str:
        """What the ledger records as who did it."""
        return f"{self.name} ({'console' if self.kind == 'user' else 'api token'})"

    def may(self, needed: Role) -> bool:
        return self.role.allows(needed)


def digest(raw: str) -> str:
    """The SHA-256 (hex) under which a token or session cookie is stored."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _checked_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise AccessError(f"a {what} name must be 1 to 100 characters")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise AccessError(f"a {what} name cannot hold control characters")
    return name


def add_user(
    settings: Settings,
    name: str,
    role: Role,
    password: str,
    *,
    actor: str,
    now: Clock = _utc_now,
) -> None:
    """Add a console user with an argon2 hash of the password (never stored as given)."""
    name = _checked_name(name, "user")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccessError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    with ledger(settings) as engine, write_transaction(engine) as session:
        if user_named(session, name) is not None:
            raise AccessError(f"there is a user named {name!r} already")
        if role is not Role.ADMIN and count_users(session) == 0:
            raise AccessError(
                "the first user must be an admin (billing users add NAME --role admin): "
                "only an admin can manage users and tokens"
            )
        session.add(
            ConsoleUser(
                name=name,
                role=role,
                password_hash=_hasher.hash(password),
                created_by=actor,
                created_at=now(),
            )
        )


def create_token(
    settings: Settings, name: str, role: Role, *, actor: str, now: Clock = _utc_now
) -> str:
    """A new API token: the raw value is returned once; only its SHA-256 is kept."""
    name = _checked_name(name, "token")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ledger(settings) as engine, write_transaction(engine) as session:
        session.add(
            ApiToken(
                name=name,
                role=role,
                token_hash=digest(raw),
                token_prefix=raw[:10],
                created_by=actor,
                created_at=now(),
            )
        )
    return raw


@dataclass(frozen=True)
class TokenRow:
    """A token as `billing tokens list` shows it (never its value)."""

    id: int
    name: str
    role: str
    prefix: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def list_tokens(settings: Settings) -> list[TokenRow]:
    with existing_ledger(settings) as engine, Session(engine) as session:
        return [
            TokenRow(
                token.id or 0,
                token.name,
                token.role,
                token.token_prefix,
                token.created_by,
                token.created_at,
                token.last_used_at,
                token.revoked_at,
            )
            for token in session.execute(select(ApiToken).order_by(col(ApiToken.id))).scalars()
        ]


def revoke(settings: Settings, token_id: int, *, now: Clock = _utc_now) -> None:
    with ledger(settings) as engine, write_transaction(engine) as session:
        if not revoke_token(session, token_id, now()):
            raise AccessError(f"no live token with id {token_id} (billing tokens list shows them)")


def principal_for_token(engine: Engine, raw_token: str, now: datetime) -> Principal | None:
    """The principal a bearer token stands for, or None (unknown or revoked); its last use is
    recorded when the recorded one is over a minute old."""
    if not raw_token.startswith(TOKEN_PREFIX):
        return None
    with Session(engine) as session:
        token = live_token(session, digest(raw_token))
        if token is None:
            return None
        principal = Principal(token.name, Role(token.role), "token")
        stale = token.last_used_at is None or now - token.last_used_at >= LAST_USE_RESOLUTION
        token_id = token.id
    if stale and token_id is not None:
        with write_transaction(engine) as writing:
            mark_token_used(writing, token_id, now)
    return principal


def sign_in(
    engine: Engine, name: str, password: str, remote: str, now: datetime
) -> tuple[Principal, str, str]:
    """Check a console sign-in; on success a new session: (principal, raw cookie, CSRF token).

    Every attempt is recorded. After FREE_FAILURES failures for the name or from the address
    within FAILURE_WINDOW, each further attempt must wait (doubling, at most 15 minutes):
    SignInThrottled says how long. A wrong name and a wrong password read the same."""
    with write_transaction(engine) as session:
        failures, latest = recent_failures(
            session, name=name, remote=remote, since=now - FAILURE_WINDOW
        )
        if failures >= FREE_FAILURES and latest is not None:
            wait = min(MAX_WAIT_SECONDS, 2 ** (failures - FREE_FAILURES))
            ready = latest + timedelta(seconds=wait)
            if now < ready:
                seconds = max(1, int((ready - now).total_seconds() + 0.999))
                raise SignInThrottled(
                    f"too many failed sign-ins: try again in {seconds} s", seconds
                )
        user = user_named(session, name)
        if user is None or user.disabled_at is not None or not _password_matches(user, password):
            record_attempt(session, name=name, remote=remote, succeeded=False, now=now)
            session.commit()
            raise AccessError("wrong name or password")
        record_attempt(session, name=name, remote=remote, succeeded=True, now=now)
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        assert user.id is not None
        session.add(
            WebSession(
                token_hash=digest(cookie),
                user_id=user.id,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + timedelta(hours=SESSION_HOURS),
                last_seen_at=now,
            )
        )
        return Principal(user.name, Role(user.role), "user"), cookie, csrf


def _password_matches(user: ConsoleUser, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def principal_for_session(
    engine: Engine, raw_cookie: str, now: datetime
) -> tuple[Principal, str] | None:
    """The signed-in user of a session cookie and the session's CSRF token, or None."""
    with write_transaction(engine) as session:
        found = session_by_hash(session, digest(raw_cookie), now)
        if found is None:
            return None
        user = session.get(ConsoleUser, found.user_id)
        if user is None or user.disabled_at is not None:
            return None
        return Principal(user.name, Role(user.role), "user"), found.csrf_token


def sign_out(engine: Engine, raw_cookie: str) -> None:
    with write_transaction(engine) as session:
        end_sessions(session, token_hash=digest(raw_cookie))


def csrf_matches(expected: str, given: str | None) -> bool:
    """A form's CSRF token against its session's, in constant time."""
    return given is not None and secrets.compare_digest(expected, given)
