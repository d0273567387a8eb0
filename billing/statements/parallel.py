"""Statement PDFs rendered across worker processes, one StatementRenderer per worker, in order."""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import chain, islice

from billing.config import Settings
from billing.domain import Statement
from billing.errors import BillingError, OutputError
from billing.statements.pdf import StatementRenderer, shared_renderer

# Statements taken from the caller and not yet handed back, per worker: enough to keep every
# worker busy while the caller writes or sends, few enough that memory stays flat.
IN_FLIGHT_PER_PROCESS = 4

_worker_renderer: StatementRenderer | None = None

# Asked first for each statement: the PDF bytes to hand back instead of rendering, or None.
Reuse = Callable[[Statement], bytes | None]
Asked = tuple[Statement, bytes | None]

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent ends


def default_render_processes() -> int:
    """The CPUs this process may run on: one rendering worker each."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def render_processes(settings: Settings) -> int:
    """The processes BILLING_RENDER_PROCESSES asks for; 0 means one per usable CPU."""
    return settings.render_processes or default_render_processes()


def render_pdfs(
    settings: Settings,
    statements: Iterable[Statement],
    processes: int,
    *,
    start_method: str = "fork",
    reuse: Reuse | None = None,
) -> Generator[tuple[Statement, bytes], None, None]:
    """Each statement with its PDF bytes, in the order given, taking statements lazily.

    `reuse`, when given, is asked for each statement first (here, in order): bytes it returns
    are handed back in that statement's place without a render. Statements it reuses before
    the first one that needs a render are handed back at once, and no pool starts for them.

    With `processes=1`, or when fewer than two statements come, they are rendered here by one
    renderer, without a pool. Otherwise a pool of up to `processes` workers starts once two
    statements have come; each worker has one renderer (fonts, stylesheet, templates; a forked
    worker inherits this process's) and renders a statement per task. At most
    `IN_FLIGHT_PER_PROCESS` statements per worker are taken from `statements` and not yet
    handed back, so a generator that reads them from the database in batches is read only that
    far ahead. Either way the garbage collector leaves
    the objects that already exist alone while rendering (about 15% of the time of a PDF in a
    process that holds a period's statements).

    A failure names the org: an error raised while rendering keeps its type (a BillingError
    gains the org in its message, anything else a note); a worker that dies is an OutputError.
    """
    if processes < 1:
        raise OutputError(f"PDF rendering needs at least one process, not {processes}")
    shared_renderer(settings)  # bad settings fail here, before a statement is read
    return _render(settings, _asked(statements, reuse), processes, start_method)


def _asked(statements: Iterable[Statement], reuse: Reuse | None) -> Iterator[Asked]:
    """Each statement with the bytes `reuse` gives for it (None: it needs a render)."""
    for statement in statements:
        yield statement, reuse(statement) if reuse is not None else None


def _render(
    settings: Settings, items: Iterator[Asked], processes: int, start_method: str
) -> Generator[tuple[Statement, bytes], None, None]:
    for statement, reused in items:
        if reused is not None:
            yield statement, reused
            continue
        first = [(statement, reused), *islice(items, processes - 1)]
        if len(first) < 2:
            yield from _render_here(settings, chain(first, items))
        else:
            yield from _render_in_pool(settings, chain(first, items), len(first), start_method)
        return


def _render_here(settings: Settings, items: Iterable[Asked]) -> Iterator[tuple[Statement, bytes]]:
    renderer = shared_renderer(settings)
    with _heap_frozen():
        for statement, reused in items:
            if reused is not None:
                yield statement, reused
                continue
            try:
                pdf = renderer.pdf(statement)
            except Exception as error:
                _name_the_org(error, statement)
                raise
            yield statement, pdf


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep the garbage collector off the objects that exist now while rendering.

    WeasyPrint allocates enough to trigger full collections, and each would walk every object
    the process already holds (all the period's statements); frozen, they are skipped. Objects
    that die meanwhile are collected after the thaw. A caller's own freeze is left alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _render_in_pool(
    settings: Settings, items: Iterable[Asked], workers: int, start_method: str
) -> Iterator[tuple[Statement, bytes]]:
    if start_method == "fork":
        shared_renderer(settings).ready()  # loaded once here, inherited by every worker
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(start_method),
        initializer=_start_worker,
        # A forkserver's workers are its children: they end with it, and it with this process.
        initargs=(settings, None if start_method == "forkserver" else os.getpid()),
    )
    in_flight: deque[tuple[Statement, Future[bytes]]] = deque()
    try:
        for statement, reused in items:
            if reused is not None:
                in_flight.append((statement, _done(reused)))
                if len(in_flight) == workers * IN_FLIGHT_PER_PROCESS:
                    yield _collect(*in_flight.popleft())
                continue
            try:
                future = pool.submit(_render_one, statement)
            except BrokenProcessPool:
                # A worker died before this one was handed over: the PDFs in flight are
                # collected in order (the first lost one raises); if all made it, this one's
                # org is named.
                while in_flight:
                    yield _collect(*in_flight.popleft())
                yield _collect(statement, _broken())
                return
            in_flight.append((statement, future))
            if len(in_flight) == workers * IN_FLIGHT_PER_PROCESS:
                yield _collect(*in_flight.popleft())
        while in_flight:
            yield _collect(*in_flight.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _done(pdf: bytes) -> Future[bytes]:
    """A future that already holds reused bytes: it waits in order behind the renders."""
    future: Future[bytes] = Future()
    future.set_result(pdf)
    return future


def _broken() -> Future[bytes]:
    """A future that failed as a broken pool's do."""
    future: Future[bytes] = Future()
    future.set_exception(BrokenProcessPool("a worker process died"))
    return future


def _collect(statement: Statement, future: Future[bytes]) -> tuple[Statement, bytes]:
    try:
        return statement, future.result()
    except BrokenProcessPool:
        raise OutputError(
            f"org {statement.org_id}: a PDF rendering worker process died (out of memory or "
            "killed); render again with fewer processes"
        ) from None
    except Exception as error:
        _name_the_org(error, statement)
        raise


def _name_the_org(error: Exception, statement: Statement) -> None:
    """Make a rendering error say which org's PDF failed, if it does not yet: a BillingError
    gets the org at the front of its message (the CLI prints only the message); anything else
    (a bug, which keeps its traceback) gets a note. Either way it keeps its type."""
    named = f"org {statement.org_id}"
    if named in str(error):
        return
    if isinstance(error, BillingError) and len(error.args) == 1:
        error.args = (f"{named}: {error.args[0]}",)
    else:
        error.add_note(f"while rendering the PDF of {named} ({statement.invoice_number})")


def _start_worker(settings: Settings, owner: int | None) -> None:
    """Tie this worker's life to its parent's (see _end_with_parent), build its one renderer
    (fonts, compiled stylesheets and templates), then keep the garbage collector off what the
    worker inherited and built: it lives as long as the worker, and walking it would also copy
    the pages it shares with its parent."""
    global _worker_renderer
    _end_with_parent(owner)
    _worker_renderer = shared_renderer(settings)
    gc.freeze()


def _end_with_parent(owner: int | None) -> None:
    """Have the kernel kill this worker when its parent ends (a close killed while rendering
    leaves no orphan rendering on): PR_SET_PDEATHSIG on Linux, SIGKILL since a worker holds
    nothing to clean up. If `owner` (the pool's process) is no longer the parent, it ended
    before the signal was set, so the worker ends now. The signal comes when the parent's
    thread that started the pool ends: render_pdfs keeps its pool to the thread that runs it.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if owner is not None and os.getppid() != owner:
        os._exit(1)


def _render_one(statement: Statement) -> bytes:
    assert _worker_renderer is not None, "the worker's initializer did not run"
    return _worker_renderer.pdf(statement)
