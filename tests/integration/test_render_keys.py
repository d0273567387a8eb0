"""Statement PDF keys: a period re-rendered, re-rated or closed again with nothing new prints no
PDF (the files stay byte for byte, untouched); what changed, and only that, is printed again."""

from __future__ import annotations

import email
import email.policy
import json
import os
import random
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing.close import distributed
from billing.close.distributed import Work
from billing.close.inline import close_period, finalize_period, rerate_period
from billing.close.publish import render_statements
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.finance.adjustments import adjust
from billing.finance.emails import resend
from billing.finance.invoices import void
from billing.periods import BillingPeriod
from billing.statements import period_reports
from billing.statements.pdf import SHIPPED_TEMPLATES, StatementRenderer
from billing.statements.render_keys import sidecar
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, pdf_text, rows
from tests.support.api_server import settings_env
from tests.support.print_memo import MEMO_FOLDER

PERIOD = BillingPeriod.parse("2026-10")
ORGS = 4
DRAFTS = CloseOptions(draft=True)


def clock() -> datetime:
    """One moment for every run of a test: a re-close or re-rate issues its drafts on the same
    day as the close before it (what the statement prints)."""
    return datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


Files = dict[str, tuple[bytes, int]]


def text_of(pdf: bytes) -> str:
    return pdf_text(pdf)


def statement_pdfs(folder: Path) -> Files:
    """Each org's statement PDF (not summary.pdf): its bytes and its modification time."""
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.glob("org-*.pdf"))
    }


def branded_templates(folder: Path) -> Path:
    """An override folder whose statement.html titles the page "Branded usage statement"."""
    folder.mkdir()
    statement_html = (SHIPPED_TEMPLATES / "statement.html").read_text(encoding="utf-8")
    (folder / "statement.html").write_text(
        statement_html.replace("Sandbox usage statement", "Branded usage statement"),
        encoding="utf-8",
    )
    return folder


@pytest.fixture
def upstream() -> Iterator[str]:
    with running_emulator(orgs=ORGS, seed=6) as base_url:
        yield base_url


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], upstream: str) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        return make_settings(mka1_base_url=upstream, mka1_api_key=SecretStr("t"), **overrides)

    return build


def test_nothing_new_prints_nothing_and_a_finalize_prints_every_statement(
    settings_for: Callable[..., Settings], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(database_url=database_url, render_processes=2)
    first = close_period(settings, PERIOD, now=clock, options=DRAFTS)
    folder = first.folder
    assert (first.pdfs_rendered, first.pdfs_reused) == (ORGS, 0)
    written = statement_pdfs(folder)
    assert len(written) == ORGS
    for name in written:
        recorded = json.loads((folder / f"{name}.key").read_text(encoding="utf-8"))
        assert set(recorded) == {"format", "key", "pdf_sha256"}

    summary = folder / "summary.pdf"
    report = summary.read_bytes()
    with monkeypatch.context() as patched:  # summary.pdf's HTML did not change: not printed
        patched.setattr(period_reports, "report_pdf", _not_printed)
        again = render_statements(settings, PERIOD)
    assert (again.count, again.rendered, again.reused) == (ORGS, 0, ORGS)
    assert statement_pdfs(folder) == written  # the same bytes, not even written again
    assert summary.read_bytes() == report
    assert sidecar(folder, "summary").is_file()

    rerated = rerate_period(settings, PERIOD, now=clock, options=DRAFTS)
    assert (rerated.pdfs_rendered, rerated.pdfs_reused) == (0, ORGS)  # new draft rows, same PDFs
    reclosed = close_period(settings, PERIOD, now=clock, options=DRAFTS)
    assert (reclosed.pdfs_rendered, reclosed.pdfs_reused) == (0, ORGS)
    assert statement_pdfs(folder) == written

    finalized = finalize_period(settings, PERIOD, now=clock)
    assert (finalized.pdfs_rendered, finalized.pdfs_reused) == (ORGS, 0)  # numbered, no DRAFT
    final = statement_pdfs(folder)
    for name, (content, _mtime) in final.items():
        assert content != written[name][0]
        assert "DRAFT" not in text_of(content)
    closed = close_period(settings, PERIOD, now=clock)
    assert (closed.pdfs_rendered, closed.pdfs_reused) == (0, ORGS)
    assert statement_pdfs(folder) == final
    assert_period_agrees(database_url, folder, str(PERIOD))


def test_an_adjusted_org_alone_is_printed_again(
    settings_for: Callable[..., Settings], database_url: str
) -> None:
    settings = settings_for(database_url=database_url)
    first = close_period(settings, PERIOD, now=clock, options=DRAFTS)
    folder = first.folder
    target = first.statements[1]
    pdf, key = folder / f"{target.org_id}.pdf", sidecar(folder, target.org_id)
    kept = pdf.read_bytes(), key.read_bytes()
    adjust(
        settings,
        str(target.invoice_id),
        None,
        Decimal("-12.34"),
        "goodwill",
        description="Goodwill credit",
        now=clock,
    )
    # The old PDF and key put back: the key, not a missing file, must tell that it changed.
    pdf.write_bytes(kept[0])
    key.write_bytes(kept[1])
    before = statement_pdfs(folder)

    result = render_statements(settings, PERIOD)

    assert (result.rendered, result.reused) == (1, ORGS - 1)
    after = statement_pdfs(folder)
    assert {name for name in after if after[name] != before[name]} == {pdf.name}
    assert "Goodwill credit" in text_of(pdf.read_bytes())
    assert_period_agrees(database_url, folder, str(PERIOD))


def test_a_template_or_stylesheet_override_prints_every_statement_again(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_for()
    folder = close_period(settings, PERIOD, now=clock).folder
    shipped = statement_pdfs(folder)

    templates = branded_templates(tmp_path / "brand")
    branded = settings_for(templates_dir=templates)
    result = render_statements(branded, PERIOD)
    assert (result.rendered, result.reused) == (ORGS, 0)
    assert all(
        "Branded usage statement" in text_of(pdf) for pdf, _ in statement_pdfs(folder).values()
    )
    unchanged = render_statements(branded, PERIOD)
    assert (unchanged.rendered, unchanged.reused) == (0, ORGS)

    styled = tmp_path / "styled"
    (styled / "assets").mkdir(parents=True)
    css = (SHIPPED_TEMPLATES / "assets" / "statement.css").read_text(encoding="utf-8")
    (styled / "assets" / "statement.css").write_text(css + "\nh2 { color: #7a1f1f; }\n")
    result = render_statements(settings_for(templates_dir=styled), PERIOD)
    assert (result.rendered, result.reused) == (ORGS, 0)

    back = render_statements(settings, PERIOD)  # the shipped look again: printed again
    assert (back.rendered, back.reused) == (ORGS, 0)
    assert {name: pdf for name, (pdf, _) in statement_pdfs(folder).items()} == {
        name: pdf for name, (pdf, _) in shipped.items()
    }


def test_a_removed_pdf_an_edited_pdf_or_a_garbled_key_prints_that_one_again(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for()
    folder = close_period(settings, PERIOD, now=clock).folder
    written = statement_pdfs(folder)
    removed, edited, garbled, untouched = sorted(written)
    (folder / removed).unlink()
    (folder / edited).write_bytes(written[edited][0][:-100])  # cut short, as a partial copy
    (folder / f"{garbled}.key").write_text("{not json", encoding="utf-8")
    (folder / "org-unknown.pdf.key").write_text("{}", encoding="utf-8")  # a stray key: ignored

    result = render_statements(settings, PERIOD)

    assert (result.rendered, result.reused) == (3, 1)
    after = statement_pdfs(folder)
    assert {name: pdf for name, (pdf, _) in after.items()} == {
        name: pdf for name, (pdf, _) in written.items()
    }  # printed again to the very same bytes
    assert after[untouched] == written[untouched]
    for name in (removed, edited, garbled):
        recorded = json.loads((folder / f"{name}.key").read_text(encoding="utf-8"))
        assert len(recorded["key"]) == 64
    forced = render_statements(settings, PERIOD, force=True)
    assert (forced.rendered, forced.reused) == (ORGS, 0)


def test_a_void_keeps_its_void_file_and_the_reissue_prints_only_the_replacement(
    settings_for: Callable[..., Settings], database_url: str
) -> None:
    settings = settings_for(database_url=database_url)
    first = close_period(settings, PERIOD, now=clock)
    folder = first.folder
    target = first.statements[0]
    others = {
        name: content
        for name, content in statement_pdfs(folder).items()
        if name != f"{target.org_id}.pdf"
    }

    void(settings, target.invoice_number, "wrong rate card")

    kept = folder / f"{target.org_id}-{target.invoice_number}-VOID.pdf"
    assert "VOID" in text_of(kept.read_bytes())
    assert sidecar(folder, kept.stem).is_file()
    assert not (folder / f"{target.org_id}.pdf").exists()
    assert not sidecar(folder, target.org_id).exists()
    rendered = render_statements(settings, PERIOD)
    assert (rendered.count, rendered.rendered, rendered.reused) == (ORGS - 1, 0, ORGS - 1)

    reissued = close_period(settings, PERIOD, now=clock)
    assert (reissued.pdfs_rendered, reissued.pdfs_reused) == (1, ORGS - 1)
    replacement = text_of((folder / f"{target.org_id}.pdf").read_bytes())
    assert f"Replaces {target.invoice_number}" in replacement
    after = statement_pdfs(folder)
    assert {name: after[name] for name in others} == others
    assert_period_agrees(database_url, folder, str(PERIOD))


def test_the_distributed_close_keys_its_pdfs_and_a_render_after_it_prints_none(
    settings_for: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = settings_for(database_url=sqlite_url, rate_batch_orgs=2)
    run_id = distributed.begin_close(settings, PERIOD, trigger="test", now=clock)
    queue: deque[tuple[str, int]] = deque([("fetch", 0)])
    chooser = random.Random(7)
    while queue:
        queue.rotate(chooser.randrange(len(queue)))
        name, unit = queue.popleft()
        queue.extend(_steps(_run(settings, run_id, name, unit)))
    folder = settings.output_dir / str(PERIOD)
    written = statement_pdfs(folder)
    assert len(written) == ORGS
    assert all(sidecar(folder, name.removesuffix(".pdf")).is_file() for name in written)

    result = render_statements(settings, PERIOD)

    assert (result.rendered, result.reused) == (0, ORGS)
    assert statement_pdfs(folder) == written
    assert_period_agrees(sqlite_url, folder, str(PERIOD))


def _not_printed(*_args: object) -> bytes:
    raise AssertionError("summary.pdf was printed again")


def _run(settings: Settings, run_id: int, name: str, unit: object) -> Work:
    if name == "fetch":
        return distributed.fetch(settings, run_id, now=clock)
    if name == "rate":
        return distributed.rate_batch(settings, run_id, str(unit), now=clock)
    if name == "render":
        return distributed.render_invoices(settings, run_id, [int(str(unit))], now=clock)
    if name == "email":
        return distributed.email_invoices(settings, run_id, [int(str(unit))], now=clock)
    return distributed.report(settings, run_id, now=clock)


def _steps(work: Work) -> list[tuple[str, object]]:
    return [
        *(("fetch", 0) for _ in range(work.fetch)),
        *(("rate", unit) for unit in work.rate),
        *(("render", invoice) for invoice in work.render),
        *(("email", invoice) for invoice in work.email),
        *(("report", 0) for _ in range(work.report)),
    ]


def test_a_resend_attaches_the_pdf_the_close_wrote_without_printing_it(
    settings_for: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(database_url=sqlite_url, render_processes=1)
    closed = close_period(settings, PERIOD, now=clock)
    number, org_id, contacts = rows(
        sqlite_url,
        "SELECT number, org_id, contact_emails FROM invoice WHERE contact_emails <> '' "
        "ORDER BY org_id LIMIT 1",
    )[0]
    on_disk = (closed.folder / f"{org_id}.pdf").read_bytes()
    monkeypatch.setattr(StatementRenderer, "pdf", _not_printed)
    report = resend(settings, str(number), str(contacts).split(", ")[0])
    assert report.sent == 1
    sent = sorted((closed.folder / "emails").glob(f"{number}-resend-*.eml"))
    assert len(sent) == 1
    message = email.message_from_bytes(sent[0].read_bytes(), policy=email.policy.default)
    attached = {str(part.get_filename()): part.get_content() for part in message.iter_attachments()}
    assert attached[f"{number}.pdf"] == on_disk


def test_a_process_that_prints_nothing_never_loads_weasyprint(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """`billing statements render` of an unchanged period in a fresh process: every statement
    is reused, and the engine (about 1 s to import) is never loaded; the same command after a
    template change loads it and prints."""
    settings = settings_for()
    close_period(settings, PERIOD, now=clock)
    probe = (
        "import sys\n"
        "from billing.cli.app import main\n"
        "try:\n    main(['statements', 'render', '--period', '2026-10'])\n"
        "except SystemExit as done:\n    code = done.code\n"
        "print('LOADED', 'weasyprint' in sys.modules, code)\n"
    )

    def render_in_a_new_process(env: dict[str, str]) -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            # the suite's print memo off: a print here is WeasyPrint's own
            env={**os.environ, **env, MEMO_FOLDER: ""},
            cwd=tmp_path,
            timeout=120,
            check=True,
        )
        return done.stdout.splitlines()[-1]

    assert render_in_a_new_process(settings_env(settings)) == "LOADED False 0"
    templates = branded_templates(tmp_path / "brand")
    branded = settings_env(settings_for(templates_dir=templates))
    assert render_in_a_new_process(branded) == "LOADED True 0"
