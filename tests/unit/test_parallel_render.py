"""Parallel PDF rendering: the same statements as serial rendering, in the order given, lazily."""

from __future__ import annotations

import gc
import io
import os
import resource
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

from billing.config import Settings
from billing.domain import Statement
from billing.errors import OutputError
from billing.statements import parallel
from billing.statements.parallel import (
    IN_FLIGHT_PER_PROCESS,
    default_render_processes,
    render_pdfs,
    render_processes,
)
from billing.statements.pdf import StatementRenderer, shared_renderer
from tests.support.factories import charge, line, statement


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def statements_of_sizes(*line_counts: int) -> list[Statement]:
    """One org per line count, numbered from 1, whose breakdown has that many lines."""
    built = []
    for number, line_count in enumerate(line_counts, start=1):
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


def statements_of_several_sizes() -> list[Statement]:
    """Five orgs whose breakdowns run from one line to several pages."""
    return statements_of_sizes(1, 120, 4, 0, 30)


class CountedStatements:
    """A stream of statements, like the database's batches, that counts how many were taken."""

    def __init__(self, statements: list[Statement]) -> None:
        self.statements = statements
        self.taken = 0

    def __iter__(self) -> Iterator[Statement]:
        for item in self.statements:
            self.taken += 1
            yield item


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)


def test_two_processes_render_what_one_renderer_does_in_the_given_order(
    settings: Settings,
) -> None:
    statements = statements_of_several_sizes()
    renderer = StatementRenderer.from_settings(settings)
    serial = [page_texts(renderer.pdf(item)) for item in statements]

    rendered = list(render_pdfs(settings, iter(statements), 2))

    assert all(got is given for (got, _pdf), given in zip(rendered, statements, strict=True))
    assert [page_texts(pdf) for _statement, pdf in rendered] == serial
    assert len(serial[1]) > 1  # the long breakdown really spans pages
    for item, texts in zip(statements, serial, strict=True):
        assert item.invoice_number in texts[0]
        assert item.org_name in texts[0]
        assert f"Account {item.org_id}" in texts[0]


def test_two_processes_read_the_statements_only_as_far_as_the_pool_needs(
    settings: Settings,
) -> None:
    statements = statements_of_sizes(*([0, 3] * 7))
    stream = CountedStatements(statements)
    bound = 2 * IN_FLIGHT_PER_PROCESS
    ahead = []  # statements taken and not yet handed back, the one in hand included

    for handed, (item, pdf) in enumerate(render_pdfs(settings, stream, 2), start=1):
        ahead.append(stream.taken - handed + 1)
        assert f"Account {item.org_id}" in page_texts(pdf)[0]
        assert item is statements[handed - 1]

    assert handed == len(statements) > bound
    assert max(ahead) == bound  # never further ahead, and far enough to keep both workers busy
    assert ahead[-1] == 1


def test_one_process_renders_in_process_one_statement_at_a_time(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = statements_of_several_sizes()[:3]
    expected = [page_texts(StatementRenderer.from_settings(settings).pdf(s)) for s in statements]
    stream = CountedStatements(statements)

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("one process must not start a pool")

    monkeypatch.setattr("billing.statements.parallel.ProcessPoolExecutor", no_pool)
    texts = []
    for handed, (item, pdf) in enumerate(render_pdfs(settings, stream, 1), start=1):
        assert stream.taken == handed
        assert item is statements[handed - 1]
        texts.append(page_texts(pdf))

    assert texts == expected


def test_the_pool_starts_only_for_two_statements_and_no_bigger_than_needed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools: list[int] = []
    real_pool = parallel.ProcessPoolExecutor

    def counted_pool(*args: Any, **kwargs: Any) -> Any:
        pools.append(kwargs["max_workers"])
        return real_pool(*args, **kwargs)

    monkeypatch.setattr("billing.statements.parallel.ProcessPoolExecutor", counted_pool)
    one = statements_of_several_sizes()[:1]

    assert list(render_pdfs(settings, iter([]), 2)) == []
    assert [item for item, _pdf in render_pdfs(settings, iter(one), 2)] == one
    assert pools == []

    two = statements_of_several_sizes()[2:4]
    assert [item for item, _pdf in render_pdfs(settings, iter(two), 8)] == two
    assert pools == [2]


def test_a_failure_in_a_worker_reaches_the_caller_naming_the_org(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = statements_of_several_sizes()
    original = StatementRenderer.pdf

    def fails_for_the_third_org(renderer: StatementRenderer, item: Statement) -> bytes:
        if item.org_id == "org-0003":
            raise OutputError("PDF rendering failed: no space left")
        return original(renderer, item)

    monkeypatch.setattr(StatementRenderer, "pdf", fails_for_the_third_org)  # forked workers too
    rendered = render_pdfs(settings, statements, 2)

    assert next(rendered)[0].org_id == "org-0001"
    assert next(rendered)[0].org_id == "org-0002"
    with pytest.raises(OutputError, match=r"^org org-0003: PDF rendering failed: no space left$"):
        next(rendered)


@pytest.mark.parametrize("processes", [1, 2])
def test_an_unexpected_error_keeps_its_type_and_names_the_org_in_a_note(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    original = StatementRenderer.pdf

    def a_bug_for_the_second_org(renderer: StatementRenderer, item: Statement) -> bytes:
        if item.org_id == "org-0002":
            raise KeyError("glyph")
        return original(renderer, item)

    monkeypatch.setattr(StatementRenderer, "pdf", a_bug_for_the_second_org)

    with pytest.raises(KeyError) as raised:
        list(render_pdfs(settings, statements_of_sizes(0, 0, 0), processes))

    assert raised.value.args == ("glyph",)
    assert raised.value.__notes__ == ["while rendering the PDF of org org-0002 (INV-2026-000002)"]


def test_a_worker_that_dies_is_an_output_error_naming_the_org(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = StatementRenderer.pdf

    def killed_on_the_first_org(renderer: StatementRenderer, item: Statement) -> bytes:
        if item.org_id == "org-0001":
            os._exit(9)
        return original(renderer, item)

    monkeypatch.setattr(StatementRenderer, "pdf", killed_on_the_first_org)

    with pytest.raises(OutputError, match=r"^org org-0001: a PDF rendering worker process died"):
        list(render_pdfs(settings, statements_of_sizes(0, 0, 0), 2))


def test_zero_processes_is_refused_and_the_setting_defaults_to_the_usable_cpus(
    settings: Settings,
) -> None:
    with pytest.raises(OutputError, match="at least one process, not 0"):
        render_pdfs(settings, statements_of_several_sizes(), 0)
    assert default_render_processes() == len(os.sched_getaffinity(0))
    assert render_processes(settings) == default_render_processes()
    assert render_processes(Settings(_env_file=None, render_processes=3)) == 3


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
    assert [item.invoice_id for item, _pdf in rendered] == [1002]
    assert gc.get_freeze_count() == 0


def frames_deep(depth: int, call: Callable[[], int]) -> int:
    return call() if depth == 0 else frames_deep(depth - 1, call)


def test_a_pdf_costs_the_same_memory_faults_however_deep_the_caller_is(
    settings: Settings,
) -> None:
    """CPython 3.11 maps and unmaps a 16 KiB frame-stack chunk each time a call crosses a chunk
    boundary; from some depths WeasyPrint's layout did so thousands of times per PDF (a pool
    worker's stack is deeper than the closing process's). The renderer opens a chunk of its
    own, so no depth pays for it."""
    renderer = StatementRenderer.from_settings(settings)
    item = statements_of_sizes(40)[0]

    def faults_of_one_pdf() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        renderer.pdf(item)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    for _warm_up in range(4):  # the heap grows over the first few PDFs of a process
        faults_of_one_pdf()
    # The least of three PDFs per depth: the heap's own growth is paid now and then (up to
    # about 700 faults in a process that has run the whole suite), a chunk per crossing on
    # every PDF (1,800 to 5,000 faults from some of these depths without the own chunk).
    faults = {
        depth: min(frames_deep(depth, faults_of_one_pdf) for _thrice in range(3))
        for depth in range(0, 40, 4)
    }

    assert max(faults.values()) < 1_000, faults
