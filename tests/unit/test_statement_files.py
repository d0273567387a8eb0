"""Statement files: names from sanitised org ids never leave the output folder or collide."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from billing.errors import OutputError
from billing.statements.csv_files import neutralise
from billing.statements.files import (
    ABANDONED_AFTER_SECONDS,
    safe_stem,
    sweep_abandoned,
    work_prefix,
    write_atomically,
)

# A writer killed mid-way: the report writer's work folder and a statement's temporary file.
KILLED_WRITER = """
import os, signal, sys, tempfile
from decimal import Decimal
from pathlib import Path
from billing.statements.allocation import CostCentreMap
from billing.statements.files import work_prefix
from billing.statements.period_reports import PeriodReportWriter
folder = Path(sys.argv[1])
writer = PeriodReportWriter(
    folder, "2026-10", "2026-09", CostCentreMap(), issuer_name="x",
    swing_threshold_percent=Decimal(50), top_orgs=10, max_org_rows=50,
    templates_dir=None, locale="en_US",
)
tempfile.mkstemp(dir=folder, prefix=work_prefix(), suffix=".pdf")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(
    "org_id", ["../x", "../../etc/passwd", "/abs", "a/b", "..", ".", "", "a\x00b", "名前"]
)
def test_hostile_org_ids_stay_inside_the_folder(tmp_path: Path, org_id: str) -> None:
    stem = safe_stem(org_id)
    assert "/" not in stem
    assert "\\" not in stem
    assert stem not in ("", ".", "..")
    written = write_atomically(tmp_path, f"{stem}.pdf", b"%PDF")
    assert written.parent == tmp_path.resolve()


def test_safe_ids_are_kept_and_lookalikes_do_not_collide() -> None:
    assert safe_stem("org-0001") == "org-0001"
    assert safe_stem("a/b") != safe_stem("a_b")
    assert safe_stem("a/b") != safe_stem("a:b")


def test_writing_outside_the_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="outside"):
        write_atomically(tmp_path, "../escape.csv", b"x")


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("=1+1", "'=1+1"), ("+x", "'+x"), ("-x", "'-x"), ("@x", "'@x"), ("ok", "ok"), (None, "")],
)
def test_formula_cells_are_neutralised(cell: str | None, expected: str) -> None:
    assert neutralise(cell) == expected


def test_the_next_close_sweeps_what_a_killed_writer_left_and_nothing_else(
    tmp_path: Path,
) -> None:
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], check=False)
    assert killed.returncode == -signal.SIGKILL
    left = sorted(entry.name for entry in tmp_path.iterdir())
    assert len(left) == 2, left
    assert any(name.startswith(".tmp-reports-") for name in left)
    mine = tmp_path / f"{work_prefix()}inflight.pdf"  # a live writer: this process
    elsewhere_new = tmp_path / ".tmp-otherhost-1-fresh.pdf"  # another host, still young
    elsewhere_old = tmp_path / ".tmp-otherhost-1-stale.pdf"  # another host, two days old
    statement = tmp_path / "org-0001.pdf"
    for path in (mine, elsewhere_new, elsewhere_old, statement):
        path.write_bytes(b"%PDF")
    two_days_ago = time.time() - 2 * ABANDONED_AFTER_SECONDS  # float-ok: file times
    os.utime(elsewhere_old, (two_days_ago, two_days_ago))

    removed = sweep_abandoned(tmp_path)

    assert sorted(path.name for path in removed) == sorted([*left, elsewhere_old.name])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == sorted(
        [mine.name, elsewhere_new.name, statement.name]
    )
    assert sweep_abandoned(tmp_path) == []
