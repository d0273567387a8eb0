"""`billing serve` as a real process for tests: settings handed over as the environment, a
free port, and an httpx client that sends a bearer token."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from billing.config import Settings
from tests.support.processes import billing_command


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `billing` read these settings (only those that differ from
    the defaults; lists comma-separated)."""
    env: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value: Any = getattr(settings, name)
        if value is None or value == field.default:
            continue
        alias = field.validation_alias
        variable = alias.choices[0] if alias is not None and hasattr(alias, "choices") else name
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(str(part) for part in value)
        else:
            text = str(value)
        env[str(variable).upper()] = text
    return env


@dataclass
class ApiServer:
    """A running `billing serve`: its API's base URL and its process."""

    url: str
    process: subprocess.Popen[str]
    output: list[str]

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        sent = dict(headers)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=sent, timeout=180)


def _read_lines(stream: Any, into: queue.Queue[str], kept: list[str]) -> None:
    for line in stream:
        kept.append(line)
        into.put(line)


@contextmanager
def served_api(
    settings: Settings, cwd: Path, *, timeout: float = 60, options: tuple[str, ...] = ()
) -> Iterator[ApiServer]:
    """`billing serve --port 0` with these settings; yields once the API answers, and stops
    the process (SIGTERM, as a service manager would) afterwards."""
    process = subprocess.Popen(
        billing_command("serve", "--host", "127.0.0.1", "--port", "0", *options),
        env={**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1", "COLUMNS": "300"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []
    threading.Thread(target=_read_lines, args=(process.stdout, lines, output), daemon=True).start()
    try:
        url = _announced_url(process, lines, output, timeout)
        server = ApiServer(url, process, output)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/openapi.json", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"billing serve did not answer: {''.join(output)[-3000:]}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _announced_url(
    process: subprocess.Popen[str], lines: queue.Queue[str], output: list[str], timeout: float
) -> str:
    """The API's URL from the line `billing serve` prints when it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if "(REST API under " in line:
            return line.split("(REST API under ", 1)[1].rstrip().rstrip(")")
    raise RuntimeError(f"billing serve did not start: {''.join(output)[-3000:]}")
