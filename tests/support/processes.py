"""Real processes for tests: the `billing emulator` server and `billing` commands."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def emulator_process(*options: str) -> Iterator[str]:
    """`billing emulator` with these options on a free port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [BIN / "billing", "emulator", "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/api/v1/sandbox/usage", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def billing_command(*args: str) -> list[str]:
    return [str(BIN / "billing"), *args]


def run_billing(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        billing_command(*args),
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def start_billing(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """A `billing` command running in the background, its stderr (progress) line-buffered."""
    return subprocess.Popen(
        billing_command(*args),
        env={**os.environ, **env, "COLUMNS": "200"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float = 120) -> str:
    """Read the process's stderr until a line holds `marker`; fail if it ends first."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"{marker!r} never appeared; the process said: {''.join(seen)[-2000:]}")
