"""Benchmark: a statement's render time now against the statement page before issue 19 (taxes,
payment details, the calmer page), in the same run, for a small, a median and a 200-line
statement.

    make bench-render-growth
    .venv/bin/python -m bench.render_growth [--repeat N] [--baseline REV]

The baseline is the project as it was at BASELINE_REVISION, unpacked by `git archive` into a
temporary folder. Two long-lived printer processes, one per tree and both on this .venv, print
the same sample statements (tests/support/sample_statements.sample_statement, the default
BILLING_STATEMENT_DETAIL), taking turns PDF by PDF with the order alternating, so drift in the
machine's speed falls on both. Each reports the CPU seconds of its own render;
medians, and the fastest of each (the render's own cost, least disturbed by the machine).
The issue allows 1.10x. Figures go to bench/results/render_growth.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from bench.support import RESULTS, load_average, write_figures

PROJECT = Path(__file__).resolve().parent.parent
# The last commit before issue 19 changed the statement page.
BASELINE_REVISION = "5b8800b"
LIMIT = 1.10

# Runs inside each tree (its own `billing` and `tests.support`): renders a size named on stdin
# and answers with the CPU seconds of that render (WeasyPrint prints on one thread; CPU time
# does not count what other processes on the machine took from it, as wall time would).
PRINTER = """
import gc, sys, time
from billing.statements.breakdown import BreakdownRule
from billing.statements.pdf import StatementRenderer
from tests.support.sample_statements import SIZES, sample_statement

renderer = StatementRenderer(
    None, "en_US", "MKA1, Inc.", "548 Market Street\\nSan Francisco, CA 94104\\nUSA",
    page_size="A4", breakdown=BreakdownRule("auto", 50),
)
statements = {size: sample_statement(lines) for size, lines in SIZES.items()}
for statement in statements.values():
    renderer.pdf(statement)
print("ready", flush=True)
for request in sys.stdin:
    gc.collect()
    started = time.process_time()
    renderer.pdf(statements[request.strip()])
    print(time.process_time() - started, flush=True)
"""


def unpack(revision: str, folder: Path) -> Path:
    """The project's tree at `revision` (what `git archive` holds) in `folder`."""
    archive = folder / "baseline.tar"
    subprocess.run(
        ["git", "-C", str(PROJECT), "archive", "--format=tar", "-o", str(archive), revision],
        check=True,
    )
    tree = folder / "baseline"
    with tarfile.open(archive) as bundle:
        bundle.extractall(tree, filter="data")
    return tree


class Printer:
    """One printer process in one tree."""

    def __init__(self, tree: Path) -> None:
        environment = {**os.environ, "PYTHONPATH": str(tree)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", PRINTER],
            cwd=tree,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._reply() != "ready":
            raise RuntimeError(f"the printer in {tree} did not start")

    def _reply(self) -> str:
        output: IO[str] | None = self.process.stdout
        assert output is not None
        return output.readline().strip()

    def seconds(self, size: str) -> float:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(size + "\n")
        stdin.flush()
        return float(self._reply())  # float-ok: seconds

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def measure(baseline: Path, repeat: int) -> list[dict[str, Any]]:
    """Median milliseconds per statement of each tree and size, and their ratio."""
    sys.path.insert(0, str(PROJECT))
    from tests.support.sample_statements import SIZES

    printers = {"now": Printer(PROJECT), "before": Printer(baseline)}
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for round_number in range(repeat):
            order = ["now", "before"] if round_number % 2 == 0 else ["before", "now"]
            for size in SIZES:
                for name in order:
                    times.setdefault((name, size), []).append(printers[name].seconds(size))
    finally:
        for printer in printers.values():
            printer.close()
    rows = []
    for size, lines in SIZES.items():
        now = statistics.median(times["now", size]) * 1000
        before = statistics.median(times["before", size]) * 1000
        fastest_now = min(times["now", size]) * 1000
        fastest_before = min(times["before", size]) * 1000
        rows.append(
            {
                "size": size,
                "lines": lines,
                "before_ms": round(before, 1),
                "now_ms": round(now, 1),
                "ratio": round(now / before, 3),
                # the fastest of each: the render's own cost, least disturbed by the machine
                "fastest_before_ms": round(fastest_before, 1),
                "fastest_now_ms": round(fastest_now, 1),
                "fastest_ratio": round(fastest_now / fastest_before, 3),
                "limit": LIMIT,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="PDFs per tree and size")
    parser.add_argument("--baseline", default=BASELINE_REVISION, help="the revision compared")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_start = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="render-growth-") as folder:
        rows = measure(unpack(args.baseline, Path(folder)), args.repeat)
    figures = {
        "benchmark": "render_growth",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "baseline": args.baseline,
        "repeat": args.repeat,
        "load_average": {"start": load_start, "end": load_average()},
        "seconds": round(time.perf_counter() - started, 1),
        "sizes": rows,
    }
    for row in rows:
        verdict = "within" if row["ratio"] <= LIMIT else "OVER"
        print(
            f"{row['size']:>9} ({row['lines']:>3} lines): before {row['before_ms']} ms, "
            f"now {row['now_ms']} ms: {row['ratio']}× ({verdict} {LIMIT}×); fastest "
            f"{row['fastest_before_ms']} -> {row['fastest_now_ms']} ms: {row['fastest_ratio']}×"
        )
    write_figures(args.results_dir, "render_growth.json", figures)


if __name__ == "__main__":
    main()
