"""`billing users add|list` and `billing tokens create|list|revoke`: who may use the console and
the REST API."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

# The ledger is imported inside the commands, so that `billing --help` answers at once.
from billing.cli.console import (
    FormatOption,
    OutputFormat,
    emit_records,
    literal,
    load_settings,
    out,
)
from billing.states import Role

users_app = typer.Typer(help="Console users (argon2-hashed passwords).", no_args_is_help=True)
tokens_app = typer.Typer(
    help="REST API bearer tokens (stored as their SHA-256).", no_args_is_help=True
)

RoleOption = Annotated[
    Role,
    typer.Option(
        "--role",
        case_sensitive=False,
        help="viewer: read; approver: also finalize, hold, adjust, credit, resend; "
        "admin: also void, users and tokens.",
    ),
]


def _password(from_stdin: bool) -> str:
    """The new password: one line on standard input, or asked twice at a terminal."""
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    entered: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return entered


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The sign-in name.")],
    role: RoleOption,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from standard input (one line)."),
    ] = False,
) -> None:
    """Add a console user; the first user must be an admin.

    The password (at least 12 characters) is asked twice at a terminal, or read as one line
    from standard input; only its argon2 hash is stored.
    """
    from billing.close.steps import who_started
    from billing.finance.access import add_user

    settings = load_settings()
    add_user(settings, name, role, _password(password_stdin), actor=who_started())
    out.print(f"user {literal(name.strip())} added as {role.value}")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="What the token is for.")],
    role: RoleOption,
) -> None:
    """Create an API token and print it once: only its SHA-256 is kept.

    Send it as `Authorization: Bearer <token>`.
    """
    from billing.close.steps import who_started
    from billing.finance.access import create_token

    settings = load_settings()
    raw = create_token(settings, name, role, actor=who_started())
    print(raw)
    typer.echo(
        f"token {name.strip()!r} ({role.value}) created; it is shown only this once", err=True
    )


@tokens_app.command("list")
def tokens_list(output: FormatOption = OutputFormat.TABLE) -> None:
    """Every token: its id, name, role, first characters, who made it, last use, revocation."""
    from billing.finance.access import list_tokens

    settings = load_settings()
    columns = ("id", "name", "role", "prefix", "created_by", "created_at", "last_used", "revoked")
    records = [
        dict(
            zip(
                columns,
                (
                    row.id,
                    row.name,
                    row.role,
                    row.prefix,
                    row.created_by,
                    row.created_at,
                    row.last_used_at,
                    row.revoked_at,
                ),
                strict=True,
            )
        )
        for row in list_tokens(settings)
    ]
    emit_records(output, columns, records, title="API tokens")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The id tokens list shows.")],
) -> None:
    """Revoke a token: requests with it are refused from now on (it stays on record)."""
    from billing.finance.access import revoke

    settings = load_settings()
    revoke(settings, token_id)
    out.print(f"token {token_id} revoked")
