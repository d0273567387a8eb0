"""Where statements go: names from sanitised org ids, written atomically in the output folder."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from billing.errors import OutputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# How a stem made with a hash ends: kept ids never end so (see safe_stem).
_HASHED_STEM = re.compile(r"-[0-9a-f]{10}$")
# Work files and folders are named after their writer (host and process), so that the next
# close can tell those of a killed writer from those of one still at work.
_WORK_NAME = re.compile(r"^\.tmp-(?:reports-)?(?:(?P<host>.+)-(?P<pid>\d+)-)?[A-Za-z0-9_]+")
# Whoever wrote it, no writer takes this long: older work files are abandoned.
ABANDONED_AFTER_SECONDS = 24 * 3600


def safe_stem(org_id: str) -> str:
    """A file-name stem for an org id: readable, never a path, distinct for distinct ids.

    Ids that are already safe are kept as they are; others are cleaned, cut to 80 characters
    and get a short hash of the original id so that e.g. "a/b" and "a_b" cannot collide. A safe
    id that looks like such a name (ending in `-` and ten hex digits) is hashed too, so that an
    id cannot take the name of another one's file.
    """
    cleaned = _UNSAFE.sub("_", org_id).strip("._-")[:80]
    if cleaned == org_id and cleaned and not _HASHED_STEM.search(cleaned):
        return cleaned
    digest = hashlib.sha256(org_id.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned or 'org'}-{digest}"


def void_stem(org_id: str, invoice_number: str) -> str:
    """Where a void invoice's statements are kept: `<org>-<number>-VOID`, beside the org's
    live `<org>` statements, so a replacement never overwrites them."""
    return f"{safe_stem(org_id)}-{safe_stem(invoice_number)}-VOID"


def period_folder(output_dir: Path, period: str) -> Path:
    folder = output_dir / period
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(
            f"cannot create {folder}: {error.strerror}; check BILLING_OUTPUT_DIR"
        ) from None
    return folder


def write_atomically(folder: Path, name: str, content: bytes) -> Path:
    """Write folder/name through a temporary file and a rename; never outside the folder."""
    target = (folder / name).resolve()
    if target.parent != folder.resolve():
        raise OutputError(f"refusing to write {name!r} outside {folder}")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=work_prefix(), suffix=target.suffix)
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, target)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror}") from None
    return target


def work_prefix(kind: str = "") -> str:
    """The name start of this process's work files in an output folder (`kind` e.g. "reports-")."""
    return f".tmp-{kind}{_host()}-{os.getpid()}-"


def sweep_abandoned(folder: Path) -> list[Path]:
    """Remove the work files and folders that a killed writer left in `folder`: those of a
    process of this host that is gone, and any older than a day. Returns what was removed."""
    removed = []
    try:
        entries = [entry for entry in folder.iterdir() if entry.name.startswith(".tmp-")]
    except OSError:
        return []
    for entry in entries:
        found = _WORK_NAME.match(entry.name)
        if found is None or not _abandoned(entry, found.group("host"), found.group("pid")):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _abandoned(entry: Path, host: str | None, pid: str | None) -> bool:
    if host == _host() and pid is not None and not _process_alive(int(pid)):
        return True
    try:
        age = time.time() - entry.lstat().st_mtime  # float-ok: file ages in seconds
    except OSError:
        return False
    return age > ABANDONED_AFTER_SECONDS


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _host() -> str:
    return _UNSAFE.sub("_", socket.gethostname()) or "host"
