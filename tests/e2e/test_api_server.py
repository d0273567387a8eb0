"""`billing serve` as a process: it prints where it listens, serves the OpenAPI document of every
endpoint, stops cleanly on SIGTERM, refuses a port in use or a missing ledger with one line,
keeps `billing --help` free of the web stack, and is what the compose file's web service runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from billing.config import Settings
from tests.support.api_server import served_api, settings_env
from tests.support.processes import BIN, run_billing

ROOT = Path(__file__).resolve().parents[2]

# Every endpoint the API promises, with its methods.
ENDPOINTS = {
    "/api/v1/invoices": {"get"},
    "/api/v1/invoices/{ref}": {"get"},
    "/api/v1/invoices/{ref}/pdf": {"get"},
    "/api/v1/invoices/{ref}/csv": {"get"},
    "/api/v1/runs": {"get"},
    "/api/v1/runs/{run_id}": {"get"},
    "/api/v1/periods/{period}/summary": {"get"},
    "/api/v1/periods/{period}/allocation": {"get"},
    "/api/v1/budgets": {"get"},
    "/api/v1/orgs/{org_id}": {"get"},
    "/api/v1/credit-notes": {"get"},
    "/api/v1/credit-notes/{number}": {"get"},
    "/api/v1/periods/{period}/finalize": {"post"},
    "/api/v1/invoices/{ref}/hold": {"post"},
    "/api/v1/invoices/{ref}/release": {"post"},
    "/api/v1/invoices/{ref}/adjustments": {"post"},
    "/api/v1/adjustments/{adjustment_id}/cancel": {"post"},
    "/api/v1/invoices/{ref}/void": {"post"},
    "/api/v1/invoices/{ref}/credit-notes": {"post"},
    "/api/v1/invoices/{ref}/resend": {"post"},
    "/api/v1/periods/{period}/emails/send": {"post"},
}


def test_serve_says_where_it_listens_documents_every_endpoint_and_stops_on_sigterm(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()  # a fresh SQLite ledger: migrated when the server starts
    with served_api(settings, tmp_path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.url.endswith("/api/v1")
        document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
        paths = {path: set(methods) for path, methods in document["paths"].items()}
        assert paths == ENDPOINTS
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                assert operation.get("security") == [{"token": []}], (method, path)
        assert httpx.get(f"{server.url}/docs", timeout=30).status_code == 404  # no CDN page
        unknown = httpx.get(f"{server.url}/nothing-here", timeout=30)
        assert unknown.status_code == 404
        assert list(unknown.json()) == ["error"]
        process = server.process
    assert process.returncode in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down
    said = "".join(server.output)
    assert "Application shutdown complete" in said  # the ledger's engine was let go
    assert "Traceback" not in said


def test_serve_refuses_a_port_in_use_with_one_line(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = settings_env(make_settings())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_billing("serve", "--port", str(port), env=env, cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "pick another --port" in line
    assert "Traceback" not in done.stderr


def test_serve_without_a_ledger_says_what_to_run(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = {**settings_env(make_settings()), "BILLING_AUTO_MIGRATE": "false"}
    done = run_billing("serve", "--port", "0", env=env, cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "no ledger at" in line
    assert "billing db upgrade" in line


def test_help_stays_free_of_the_web_stack_and_compose_runs_billing_serve(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from billing.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'billing.web') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert "HEAVY []" in done.stdout
    assert " serve " in done.stdout
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    web = compose["services"]["web"]
    assert web["command"][:2] == ["billing", "serve"]
    assert "8000:8000" in web["ports"]
    shown = subprocess.run(
        [str(BIN / "billing"), "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert shown.returncode == 0
    for option in (part for part in web["command"][2:] if part.startswith("--")):
        assert option in shown.stdout, option


def login_cookie(console: str, **headers: str) -> str:
    return httpx.get(f"{console}/login", headers=headers, timeout=30).headers["set-cookie"]


def test_cookies_are_secure_behind_a_trusted_tls_proxy_only(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    with served_api(settings, tmp_path) as server:
        console = server.url.removesuffix("/api/v1")
        assert "Secure" not in login_cookie(console, **forwarded)  # nobody is trusted
    with served_api(settings, tmp_path, options=("--forwarded-allow-ips", "127.0.0.1")) as server:
        console = server.url.removesuffix("/api/v1")
        assert "Secure" in login_cookie(console, **forwarded)
        assert "Secure" not in login_cookie(console)  # plain HTTP from the proxy's own address
