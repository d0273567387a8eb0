"""Benchmark: time and peak memory of the close at 100, 1,000 and 5,000 orgs.

Each size runs `bench.close --no-floors` in its own process (a process's peak RSS only grows),
so every size's peak memory is its own. The time is the sum of the stages (the emulator's data
generation is not counted); the target is linear growth: 5,000 orgs in no more than 5.5 times
the time of 1,000, and peak memory that does not grow with the number of orgs.

    make bench-scale [BENCH_SIZES=100,1000,5000]
    .venv/bin/python -m bench.scaling [--sizes 100,1000,5000] [--processes P]

Figures go to bench/results/scaling.json (and each size's to bench/results/scaling/).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from typing import Any

from bench.support import RESULTS
from billing.statements.parallel import default_render_processes

TIME_TARGET = 5.5
# "Flat": no more growth than the largest single statement could explain, with room for noise.
FLAT_MIB = 25


FOLDER = RESULTS / "scaling"


def run_size(orgs: int, processes: int) -> dict[str, Any]:
    folder = FOLDER
    command = [sys.executable, "-m", "bench.close", "--orgs", str(orgs), "--no-floors"]
    command += ["--processes", str(processes), "--results-dir", str(folder)]
    print(f"close of {orgs:,} orgs ...", file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    figures: dict[str, Any] = json.loads((folder / f"close-{orgs}.json").read_text("utf-8"))
    return figures


def summarise(figures: dict[str, Any]) -> dict[str, Any]:
    stages = {stage["stage"]: stage for stage in figures["stages"]}
    return {
        "orgs": figures["orgs"],
        "measured_at": figures["measured_at"],
        "usage_results": figures["usage_results"],
        "line_items": figures["charges"] + figures["lines"],
        "largest_statement_lines": figures["largest_statement_lines"],
        "close_seconds": figures["close_seconds"],
        "seconds_per_org": round(figures["close_seconds"] / figures["orgs"], 4),
        "peak_rss_mib": figures["peak_rss_mib"],
        "render_workers_peak_rss_mib": figures["render_workers_peak_rss_mib"],
        "load_average": figures["load_average"],
        "stage_seconds": {name: stage["seconds"] for name, stage in stages.items()},
        "stage_peak_rss_mib": {name: stage["peak_rss_mib"] for name, stage in stages.items()},
    }


def judge(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Time growth against org growth between consecutive sizes, and memory growth."""
    verdicts: dict[str, Any] = {"steps": []}
    for smaller, larger in itertools.pairwise(sizes):
        verdicts["steps"].append(
            {
                "from_orgs": smaller["orgs"],
                "to_orgs": larger["orgs"],
                "orgs_ratio": round(larger["orgs"] / smaller["orgs"], 2),
                "time_ratio": round(larger["close_seconds"] / smaller["close_seconds"], 2),
                "peak_rss_growth_mib": round(larger["peak_rss_mib"] - smaller["peak_rss_mib"], 1),
            }
        )
    by_orgs = {size["orgs"]: size for size in sizes}
    if 1000 in by_orgs and 5000 in by_orgs:
        ratio = by_orgs[5000]["close_seconds"] / by_orgs[1000]["close_seconds"]
        verdicts["time_5000_vs_1000"] = {
            "value": round(ratio, 2),
            "target": f"<= {TIME_TARGET}",
            "met": ratio <= TIME_TARGET,
        }
    if len(sizes) >= 2:
        first, last = sizes[0], sizes[-1]
        for key, peak in (
            ("peak_rss", lambda size: size["peak_rss_mib"]),
            ("peak_rss_statements", statements_peak),
        ):
            growth = peak(last) - peak(first)
            verdicts[key] = {
                "from_orgs": first["orgs"],
                "to_orgs": last["orgs"],
                "growth_mib": round(growth, 1),
                "growth_kib_per_org": round(growth * 1024 / (last["orgs"] - first["orgs"]), 1),
                "target": f"<= {FLAT_MIB} MiB",
                "met": growth <= FLAT_MIB,
            }
    return verdicts


def statements_peak(size: dict[str, Any]) -> float:
    """Peak RSS of the stages that handle usage and statements, without the period report."""
    peaks = size["stage_peak_rss_mib"]
    return float(max(peak for name, peak in peaks.items() if name != "summary and reports"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--processes", type=int, default=default_render_processes())
    parser.add_argument(
        "--summarise-only",
        action="store_true",
        help="rebuild scaling.json from the sizes already in bench/results/scaling/",
    )
    args = parser.parse_args()
    orgs = [int(size) for size in args.sizes.split(",")]
    if args.summarise_only:
        runs = [json.loads((FOLDER / f"close-{n}.json").read_text("utf-8")) for n in orgs]
    else:
        runs = [run_size(n, args.processes) for n in orgs]
    sizes = [summarise(figures) for figures in runs]
    result = {"processes": args.processes, "sizes": sizes, "verdicts": judge(sizes)}
    print(
        f"{'orgs':>6}{'results':>11}{'line items':>12}{'close':>10}{'per org':>10}{'peak RSS':>11}"
    )
    for size in sizes:
        print(
            f"{size['orgs']:>6,}{size['usage_results']:>11,}{size['line_items']:>12,}"
            f"{size['close_seconds']:>9.1f}s{size['seconds_per_org'] * 1000:>8.1f}ms"
            f"{size['peak_rss_mib']:>7.0f} MiB"
        )
    for step in result["verdicts"]["steps"]:
        print(
            f"{step['from_orgs']:,} -> {step['to_orgs']:,} orgs ({step['orgs_ratio']}x): "
            f"time {step['time_ratio']}x, peak RSS {step['peak_rss_growth_mib']:+.0f} MiB"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
