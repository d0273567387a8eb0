"""Statement files: names from sanitised org ids never leave the output folder or collide."""

from pathlib import Path

import pytest

from billing.errors import OutputError
from billing.statements.csv_files import neutralise
from billing.statements.files import safe_stem, write_atomically


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
