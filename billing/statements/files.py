"""Where statements go: names from sanitised org ids, written atomically in the output folder."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from billing.errors import OutputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(org_id: str) -> str:
    """A file-name stem for an org id: readable, never a path, distinct for distinct ids.

    Ids that are already safe are kept as they are; others are cleaned and get a short hash of
    the original id so that e.g. "a/b" and "a_b" cannot collide.
    """
    cleaned = _UNSAFE.sub("_", org_id).strip("._-")[:80]
    if cleaned == org_id and cleaned:
        return cleaned
    digest = hashlib.sha256(org_id.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned or 'org'}-{digest}"


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
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=target.suffix)
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, target)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror}") from None
    return target
