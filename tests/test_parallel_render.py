"""Parallel PDF rendering: the same statements as serial rendering, in the order given."""

from __future__ import annotations

import gc
import io
from dataclasses import replace
from decimal import Decimal

import pytest
from pypdf import PdfReader

from billing.config import Settings
from billing.domain import Statement
from billing.errors import OutputError
from billing.statements.parallel import default_render_processes, render_pdfs
from billing.statements.pdf import StatementRenderer, shared_renderer
from tests.factories import charge, line, statement


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def statements_of_several_sizes() -> list[Statement]:
    """Five orgs whose breakdowns run from one line to several pages."""
    built = []
    for number, line_count in enumerate((1, 120, 4, 0, 30), start=1):
        lines = tuple(
            line("duration", "0.01", f"key-{number}-{index}", f"user-{index}")
            for index in range(line_count)
        )
        amount = Decimal("0.01") * line_count
        built.append(
            replace(
                statement(
                    invoice_number=f"INV-2026-{number:06d}",
                    org_id=f"org-{number:04d}",
                    org_name=f"Org number {number}",
                    charges=(charge("duration", str(amount), "0.12 per hour"),),
                    lines=lines,
                ),
                invoice_id=1000 + number,
            )
        )
    return built


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)


def test_two_processes_render_what_one_renderer_does_in_the_given_order(
    settings: Settings,
) -> None:
    statements = statements_of_several_sizes()
    renderer = StatementRenderer.from_settings(settings)
    serial = [page_texts(renderer.pdf(item)) for item in statements]

    rendered = list(render_pdfs(settings, statements, 2))

    assert [invoice_id for invoice_id, _pdf in rendered] == [s.invoice_id for s in statements]
    assert [page_texts(pdf) for _invoice_id, pdf in rendered] == serial
    assert len(serial[1]) > 1  # the long breakdown really spans pages
    for item, texts in zip(statements, serial, strict=True):
        assert item.invoice_number in texts[0]
        assert item.org_name in texts[0]


def test_one_process_renders_in_process_with_the_same_text(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = statements_of_several_sizes()[:3]
    expected = [page_texts(StatementRenderer.from_settings(settings).pdf(s)) for s in statements]

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("one process must not start a pool")

    monkeypatch.setattr("billing.statements.parallel.ProcessPoolExecutor", no_pool)
    rendered = list(render_pdfs(settings, statements, 1))

    assert [invoice_id for invoice_id, _pdf in rendered] == [s.invoice_id for s in statements]
    assert [page_texts(pdf) for _invoice_id, pdf in rendered] == expected


def test_more_processes_than_statements_and_no_statements(settings: Settings) -> None:
    statements = statements_of_several_sizes()[:2]

    rendered = list(render_pdfs(settings, statements, 8))

    assert [invoice_id for invoice_id, _pdf in rendered] == [1001, 1002]
    assert list(render_pdfs(settings, [], 2)) == []


def test_a_failure_in_a_worker_reaches_the_caller_naming_the_org(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = statements_of_several_sizes()
    original = StatementRenderer.pdf

    def fails_for_the_third_org(renderer: StatementRenderer, item: Statement) -> bytes:
        if item.org_id == "org-0003":
            raise OutputError(f"org {item.org_id}: PDF rendering failed: no space left")
        return original(renderer, item)

    monkeypatch.setattr(StatementRenderer, "pdf", fails_for_the_third_org)  # forked workers too
    rendered = render_pdfs(settings, statements, 2)

    assert next(rendered)[0] == 1001
    assert next(rendered)[0] == 1002
    with pytest.raises(OutputError, match="org org-0003: PDF rendering failed"):
        next(rendered)


def test_zero_processes_is_refused_and_the_default_is_the_usable_cpus(settings: Settings) -> None:
    with pytest.raises(OutputError, match="at least one process"):
        list(render_pdfs(settings, statements_of_several_sizes(), 0))
    assert default_render_processes() >= 1


def test_the_shared_renderer_is_built_once_per_process_and_settings(settings: Settings) -> None:
    letter = Settings(_env_file=None, page_size="Letter")

    assert shared_renderer(settings) is shared_renderer(Settings(_env_file=None))
    assert shared_renderer(letter) is not shared_renderer(settings)
    first_page = PdfReader(io.BytesIO(shared_renderer(letter).pdf(statement()))).pages[0]
    assert (first_page.mediabox.width, first_page.mediabox.height) == (612, 792)


def test_rendering_in_process_freezes_the_heap_only_while_it_renders(settings: Settings) -> None:
    statements = statements_of_several_sizes()[:2]
    rendered = render_pdfs(settings, statements, 1)

    next(rendered)
    assert gc.get_freeze_count() > 0
    assert [invoice_id for invoice_id, _pdf in rendered] == [1002]
    assert gc.get_freeze_count() == 0
