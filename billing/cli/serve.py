"""`billing serve`: the console and the REST API on uvicorn; a port in use is one line."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from billing.cli.console import load_settings, out
from billing.errors import ConfigError

MAX_PORT = 65535


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening (port 0: a free one), or one line saying why
    not (a port in use, an address this machine does not have)."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise ConfigError(f"--host {host!r}: {error.strerror or error}; give an address") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; "
            "pick another --port (or stop what uses it)"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve_command(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", metavar="PORT", min=0, max=MAX_PORT, help="TCP port (0 picks a free one)."
        ),
    ] = 8000,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            metavar="IPS",
            help="Behind a TLS proxy: the proxy's addresses (comma-separated), whose "
            "X-Forwarded-Proto and X-Forwarded-For are trusted (so cookies are Secure).",
        ),
    ] = None,
) -> None:
    """Serve the finance console (sign in with a user from `billing users add`) and the REST
    API under /api/v1 (OpenAPI document at /api/v1/openapi.json; clients send a token from
    `billing tokens create` as `Authorization: Bearer TOKEN`)."""
    import uvicorn

    from billing.db.engine import existing_ledger, ledger
    from billing.web.app import create_app

    settings = load_settings()
    with ledger(settings):  # migrated first when BILLING_AUTO_MIGRATE is on
        pass
    with existing_ledger(settings):  # else one line: no ledger, or an older schema
        pass
    sock = listening_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            log_level="info",
            proxy_headers=forwarded_allow_ips is not None,
            forwarded_allow_ips=forwarded_allow_ips,
        )
    )
    out.print(
        f"billing console on http://{shown_host}:{bound_port}/ "
        f"(REST API under http://{shown_host}:{bound_port}/api/v1)",
        soft_wrap=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
