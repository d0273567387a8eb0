"""Statement PDF input keys: a PDF on disk is reused, not printed again, while its key matches.

A statement's PDF is a function of what it is printed from. Its key is the SHA-256 of one
canonical JSON document (keys sorted, no spaces, UTF-8) holding:

- `html`: the SHA-256 of the statement's HTML as the renderer makes it. That is everything the
  template prints, whichever template prints it (an override folder's too, and the macros it
  imports), with the printing settings applied: issuer, locale, payment terms, the breakdown
  setting. What the template does not print (the invoice id of a draft replaced by a re-rate,
  the time of day it was issued) does not change the key.
- `chart`: the daily usage and the period the chart is drawn from, for a renderer that draws
  the chart outside the HTML.
- `renderer`: the renderer's fingerprint, computed once per renderer (`fingerprint`): the page
  size and the other printing settings, the SHA-256 of every file under the asset folders (the
  override folder's `assets/` first, then the shipped one: stylesheet, logo, fonts), the source
  of the `billing.statements` modules, and the versions of WeasyPrint and the libraries it
  prints with.

The key is kept beside the PDF, in `<stem>.pdf.key` (JSON: the key and the SHA-256 of the PDF
bytes it was written with), written atomically after the PDF. A PDF is reused only when its
sidecar's key equals the statement's and the PDF's bytes still hash to the recorded digest: a
PDF removed or edited by hand, a sidecar missing or garbled, or a crash between the two
writes all make the next pass render that statement again. Fonts installed on the system are
not in the key: after changing them, render with `billing statements render --force`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from billing.config import PROJECT_ROOT, Settings
from billing.domain import Statement
from billing.statements.files import write_atomically
from billing.statements.pdf import (
    StatementRenderer,
    asset_roots,
    printing_settings,
    shared_renderer,
)

KEY_FORMAT = 1
SIDECAR_SUFFIX = ".pdf.key"
STATEMENTS_CODE = PROJECT_ROOT / "billing" / "statements"
# The libraries a PDF's bytes depend on besides the project's own code.
PRINTING_LIBRARIES = ("weasyprint", "pydyf", "tinycss2", "cssselect2", "fonttools", "pillow")


@dataclass(frozen=True, slots=True)
class KeyedPdf:
    """A statement's PDF bytes, its key, and whether the bytes were reused from disk."""

    pdf: bytes
    key: str
    reused: bool


def sidecar(folder: Path, stem: str) -> Path:
    """Where the key of `<stem>.pdf` is kept."""
    return folder / f"{stem}{SIDECAR_SUFFIX}"


def fingerprint(settings: Settings) -> str:
    """What every PDF of this process's renderer for these settings shares (see the module)."""
    return _fingerprint(*printing_settings(settings))


@lru_cache(maxsize=4)
def _fingerprint(templates_dir: Path | None, *printing: object) -> str:
    """Computed once per process, like the renderer it describes (whose stylesheet is compiled
    once): both see the files as they were when first used."""
    document = {
        "templates_dir": str(templates_dir.resolve()) if templates_dir else None,
        "settings": [str(value) for value in printing],
        "assets": [
            [index, str(path.relative_to(root)), _file_digest(path)]
            for index, root in enumerate(asset_roots(templates_dir))
            for path in sorted(root.rglob("*"))
            if path.is_file()
        ],
        "code": [[path.name, _file_digest(path)] for path in sorted(STATEMENTS_CODE.glob("*.py"))],
        "libraries": [[name, _version(name)] for name in PRINTING_LIBRARIES],
    }
    return _digest(document)


def statement_key(renderer: StatementRenderer, printed_by: str, statement: Statement) -> str:
    """The statement's key: its HTML, its chart's data and the renderer's fingerprint."""
    html = renderer.html(statement)
    document = {
        "format": KEY_FORMAT,
        "renderer": printed_by,
        # The renderer's print path (pdf.py: optimised or plain; the same look, other bytes).
        "path": getattr(renderer, "optimised", None),
        "html": hashlib.sha256(html.encode("utf-8")).hexdigest(),
        "chart": {
            "period": [statement.period_start.isoformat(), statement.period_end.isoformat()],
            "days": [[day.day.isoformat(), day.duration_ms] for day in statement.daily_usage],
        },
    }
    return _digest(document)


def stored_pdf(folder: Path, stem: str, key: str) -> bytes | None:
    """The bytes of `<stem>.pdf` when its sidecar holds `key` and the bytes are those the key
    was written with; None when anything is missing, garbled or different."""
    try:
        recorded = json.loads(sidecar(folder, stem).read_text(encoding="utf-8"))
        if not isinstance(recorded, dict) or recorded.get("key") != key:
            return None
        pdf = (folder / f"{stem}.pdf").read_bytes()
    except (OSError, ValueError):
        return None
    if hashlib.sha256(pdf).hexdigest() != recorded.get("pdf_sha256"):
        return None
    return pdf


def write_pdf(folder: Path, stem: str, pdf: bytes, keyed: KeyedPdf | None = None) -> None:
    """Write `<stem>.pdf` and then its key (`keyed`, of these bytes), each atomically; a PDF
    reused from this very file is left as it is. The old sidecar goes first, so that it never
    vouches for other bytes."""
    if keyed is not None and keyed.reused:
        return
    forget_key(folder, stem)
    write_atomically(folder, f"{stem}.pdf", pdf)
    if keyed is not None:
        record_key(folder, stem, keyed.key, pdf)


def record_key(folder: Path, stem: str, key: str, pdf: bytes) -> None:
    """Write `<stem>.pdf`'s sidecar (after the PDF itself is in place), atomically."""
    record = {"format": KEY_FORMAT, "key": key, "pdf_sha256": hashlib.sha256(pdf).hexdigest()}
    content = json.dumps(record, sort_keys=True).encode("utf-8") + b"\n"
    write_atomically(folder, sidecar(folder, stem).name, content)


def report_key(html: str, templates_dir: Path | None, locale: str) -> str:
    """The key of a period report PDF (summary.pdf): its HTML and what prints it besides."""
    printed_by = _fingerprint(templates_dir, "report", locale)
    document = {
        "format": KEY_FORMAT,
        "renderer": printed_by,
        "html": hashlib.sha256(html.encode("utf-8")).hexdigest(),
    }
    return _digest(document)


def forget_key(folder: Path, stem: str) -> None:
    """Remove `<stem>.pdf`'s sidecar (its PDF is being removed or replaced unkeyed)."""
    sidecar(folder, stem).unlink(missing_ok=True)


@dataclass
class StatementPdfs:
    """One pass's statement PDFs: each reused from the folder when its key matches, else
    rendered by this process's renderer; counts both. `force` renders every one."""

    settings: Settings
    folder: Path
    force: bool = False
    rendered: int = 0
    reused: int = 0
    _keys: dict[int, KeyedPdf] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # The fingerprint first, then the renderer: files that change in between make a later
        # pass render again rather than trust a PDF printed from other files.
        self._printed_by = fingerprint(self.settings)
        self._renderer = shared_renderer(self.settings)

    @property
    def renderer(self) -> StatementRenderer:
        return self._renderer

    def key(self, statement: Statement) -> str:
        return statement_key(self._renderer, self._printed_by, statement)

    def stored(self, statement: Statement, stem: str) -> bytes | None:
        """The statement's PDF from the folder when its key matches (counted as reused); None
        when it must be rendered. The key is remembered for `keyed`."""
        key = self.key(statement)
        pdf = None if self.force else stored_pdf(self.folder, stem, key)
        self._keys[id(statement)] = KeyedPdf(pdf or b"", key, pdf is not None)
        if pdf is not None:
            self.reused += 1
        return pdf

    def keyed(self, statement: Statement, pdf: bytes) -> KeyedPdf:
        """The key `stored` computed for this statement with the bytes now in hand (rendered,
        counted so, or the reused ones)."""
        asked = self._keys.pop(id(statement))
        if asked.reused:
            return asked
        self.rendered += 1
        return KeyedPdf(pdf, asked.key, reused=False)

    def pdf(self, statement: Statement, stem: str) -> KeyedPdf:
        """One statement's PDF, reused or rendered here."""
        stored = self.stored(statement, stem)
        return self.keyed(statement, stored or self._renderer.pdf(statement))

    def describe(self) -> str:
        return f"{self.rendered} rendered, {self.reused} unchanged"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _digest(document: object) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
