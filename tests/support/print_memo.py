"""The suite's memo of printed PDFs: WeasyPrint prints each distinct document once a session.

Integration and end-to-end tests close the same few months again and again, and printing
statements and summary.pdf was over a third of the suite's time. The memo keys each print by
everything WeasyPrint is handed: the printed HTML (its in-memory chart URLs replaced by their
images' digests), the renderer's constructor arguments, and the bytes of every file under the
shipped templates and the override folder. A document seen before gets the bytes WeasyPrint
printed for it the first time, from a folder the session's processes share; anything new is
printed for real and kept. A print that fails is not kept, so every failure happens for real.

The test processes use it through `install` (a fixture, per test); the `billing` commands,
console servers and Celery workers the tests start use it through `print_memo_site/
sitecustomize.py`, which `memo_environment` puts on their PYTHONPATH. The unit layer, which
tests printing itself (pixels, fonts, pools, parsing), never uses it; BILLING_TEST_PRINT_MEMO=0
turns it off for a whole run. Nothing of billing is imported here before it is needed: a
command that prints nothing imports nothing more for the memo.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from functools import cache, wraps
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

MEMO_FOLDER = "BILLING_TEST_PRINT_MEMO_DIR"  # the environment of the processes tests start
SITE = Path(__file__).resolve().parent / "print_memo_site"
REPOSITORY = Path(__file__).resolve().parents[2]
MEMORY_URL = re.compile(r"billing-memory:[0-9]+/[^\"'\s)]*")  # printed_html.MEMORY_SCHEME

Setter = Callable[[object, str, Any], None]


def folder_digest(folder: Path | None) -> str:
    """The names and bytes of every file under `folder` (none: '')."""
    if folder is None or not Path(folder).exists():
        return ""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@cache
def shipped_digest() -> str:
    """The shipped templates' digest (they do not change during a session)."""
    return folder_digest(REPOSITORY / "templates")


def memo_environment(folder: Path) -> dict[str, str]:
    """What a process started by a test needs to print through the memo in `folder`."""
    path = [str(SITE), str(REPOSITORY), os.environ.get("PYTHONPATH", "")]
    return {MEMO_FOLDER: str(folder), "PYTHONPATH": os.pathsep.join(filter(None, path))}


class PrintMemo:
    """PDFs by the digest of their printing inputs, as files in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def pdf(self, inputs: str, print_pdf: Callable[[], bytes]) -> bytes:
        """The bytes kept for `inputs`, or `print_pdf()`'s, kept (atomically: processes
        share the folder)."""
        path = self.folder / f"{hashlib.sha256(inputs.encode('utf-8')).hexdigest()}.pdf"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        pdf = print_pdf()
        partial = self.folder / f".{path.stem}.{uuid.uuid4().hex}"
        partial.write_bytes(pdf)
        os.replace(partial, path)
        return pdf

    def install(self, setter: Setter) -> None:
        """Statements, credit notes and summary.pdf printed through the memo (`setter`:
        monkeypatch.setattr for one test, setattr for a whole process)."""
        from billing.statements import pdf, period_reports, reports

        self.patch_renderer(pdf, setter)
        self.patch_reports(reports, setter)
        setter(period_reports, "report_pdf", reports.report_pdf)

    def install_on_import(self) -> None:
        """`install` for a process that has not imported the printing modules yet: each is
        patched as it is first imported."""
        sys.meta_path.insert(
            0,
            PatchOnImport(
                {
                    "billing.statements.pdf": lambda module: self.patch_renderer(module, setattr),
                    "billing.statements.reports": lambda module: self.patch_reports(
                        module, setattr
                    ),
                }
            ),
        )

    def patch_renderer(self, pdf: ModuleType, setter: Setter) -> None:
        """StatementRenderer's prints through the memo, keyed by its constructor's arguments
        and the templates it reads."""
        renderer = pdf.StatementRenderer
        original_init = renderer.__init__
        original_print = renderer._print
        memo = self

        @wraps(original_init)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            override_dir = args[0] if args else kwargs.get("override_dir")
            self._memo_printer = "\0".join(
                [
                    repr((args, sorted(kwargs.items()))),
                    folder_digest(override_dir),
                    shipped_digest(),
                ]
            )

        @wraps(original_print)
        def print_pdf(self: Any, html: Callable[[], str], document_name: str) -> bytes:
            printer = getattr(self, "_memo_printer", None)
            try:
                text = html()
            except OSError:
                return bytes(original_print(self, html, document_name))  # fails as it would
            if printer is None:  # made before the memo was installed: printed for real
                return bytes(original_print(self, lambda: text, document_name))
            images = self._memory_images

            def image_digest(found: re.Match[str]) -> str:
                content = images.get(found.group(0)) or b""
                return "image:" + hashlib.sha256(content).hexdigest()

            inputs = printer + "\0" + MEMORY_URL.sub(image_digest, text)
            return memo.pdf(inputs, lambda: original_print(self, lambda: text, document_name))

        setter(renderer, "__init__", init)
        setter(renderer, "_print", print_pdf)

    def patch_reports(self, reports: ModuleType, setter: Setter) -> None:
        """summary.pdf through the memo, keyed by its HTML and the templates it reads."""
        original = reports.report_pdf

        @wraps(original)
        def report_pdf(report: Any, override_dir: Path | None, locale: str) -> bytes:
            html = reports.report_html(report, override_dir, locale)
            printer = [locale, str(override_dir), folder_digest(override_dir), shipped_digest()]
            inputs = "\0".join(["report", *printer, html])
            return self.pdf(inputs, lambda: original(report, override_dir, locale))

        setter(reports, "report_pdf", report_pdf)


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs a patch on a module right after its first import, by module name."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self.patches = patches

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        patch = self.patches.pop(fullname, None)
        if patch is None:
            return None
        spec = next(
            (
                found
                for finder in sys.meta_path
                if finder is not self and hasattr(finder, "find_spec")
                if (found := finder.find_spec(fullname, path, target)) is not None
            ),
            None,
        )
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            patch(module)

        loader.exec_module = exec_module
        return spec
