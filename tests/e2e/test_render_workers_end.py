"""A close killed while its PDFs render takes its rendering worker processes with it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.support.processes import emulator_process, start_billing, wait_for_line


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_rendering_workers_end_when_the_close_is_killed(tmp_path: Path) -> None:
    with emulator_process("--orgs", "40", "--seed", "3") as upstream:
        env = {
            "MKA1_BASE_URL": upstream,
            "MKA1_API_KEY": "test-key",
            "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.db'}",
            "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
            "BILLING_EMAIL_BACKEND": "file",
            "BILLING_BROKER_URL": "",
            "BILLING_RENDER_PROCESSES": "2",
        }
        close = start_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
        wait_for_line(close, "finalized ")
        deadline = time.monotonic() + 60
        while len(workers := _children(close.pid)) < 2:
            assert time.monotonic() < deadline, "the close started no rendering workers"
            assert close.poll() is None, "the close ended before it rendered"
            time.sleep(0.05)
        close.send_signal(signal.SIGKILL)
        close.wait(timeout=30)
    deadline = time.monotonic() + 5
    while alive := [pid for pid in workers if _running(pid)]:
        if time.monotonic() > deadline:
            for pid in alive:
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"rendering workers {alive} outlived the killed close")
        time.sleep(0.1)
