"""Benchmark: the close on real Celery workers (Redis broker, PostgreSQL), with 1 worker process
and then with 2, to show what adding workers gives.

    make bench-workers [BENCH_WORKER_ORGS=N]
    .venv/bin/python -m bench.workers [--orgs N] [--concurrency 1,2]

Each run gets a fresh throwaway PostgreSQL database and an empty Redis database of its own
(number 12), one `celery worker` process serving all three queues with the given pool size,
the emulator on loopback and an aiosmtpd sink. The clock runs from enqueueing the close to the
run's `succeeded` in the database (`workers.dispatch.close_on_workers`, as `billing close
--workers` does); the worker is started and answering pings before. Beside the speed-up is
what a pure CPU loop gains from a second process at the same moment: the most two processes
can give on this machine right then. Figures go to bench/results/workers-N.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import redis
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from bench.close import API_KEY, PERIOD, write_org_directory
from bench.support import (
    BIN,
    RESULTS,
    emulator_process,
    free_port,
    load_average,
    machine,
    parallel_capacity,
    throwaway_database,
    write_figures,
)

REDIS_DB = 12  # the benchmark's own Redis database number (the tests use 13)
BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"
QUEUES = "billing.fetch,billing.render,billing.email"


def worker_environment(
    database_url: str, base_url: str, folder: Path, smtp_port: int
) -> dict[str, str]:
    return {
        "BILLING_BROKER_URL": BROKER,
        "BILLING_DATABASE_URL": database_url,
        "BILLING_ORGS": str(folder / "orgs.yaml"),
        "BILLING_OUTPUT_DIR": str(folder / "statements"),
        "MKA1_BASE_URL": base_url,
        "MKA1_API_KEY": API_KEY,
        "MKA1_TIMEOUT_SECONDS": "600",
        "MKA1_PAGE_DEADLINE_SECONDS": "1200",
        "BILLING_EMAIL_BACKEND": "smtp",
        "BILLING_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "BILLING_SMTP_RATE_PER_SECOND": "1000000",
    }


@contextmanager
def celery_worker(env: dict[str, str], concurrency: int, log: Path) -> Iterator[None]:
    """One worker process with `concurrency` pool processes, stopped (warm shutdown) after."""
    command = [str(BIN / "celery"), "-A", "workers.celery_app", "worker", "-Q", QUEUES]
    command += [f"--concurrency={concurrency}", "-n", f"bench{concurrency}@%h"]
    command += ["--loglevel=WARNING", "--without-gossip", "--without-mingle"]
    with log.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_answering(process, log)
            yield
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def wait_until_answering(process: subprocess.Popen[Any], log: Path) -> None:
    from workers.celery_app import app

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the Celery worker stopped at start; see {log}")
        if app.control.ping(timeout=1.0):
            return
    raise SystemExit(f"the Celery worker did not answer pings in 90 s; see {log}")


def close_once(
    concurrency: int, base_url: str, folder: Path, smtp_port: int, orgs: int
) -> dict[str, Any]:
    from billing.config import Settings
    from workers.dispatch import close_on_workers

    redis.Redis.from_url(BROKER).flushdb()
    with throwaway_database("billing_bench_workers") as database_url:
        env = worker_environment(database_url, base_url, folder, smtp_port)
        # each run prints into its own folder: no PDF of an earlier run is reused by its key
        env["BILLING_OUTPUT_DIR"] = str(folder / f"statements-{concurrency}")
        settings = Settings(_env_file=None, **_settings_fields(env))
        cpu_before = children_cpu()
        with celery_worker(env, concurrency, folder / f"worker-{concurrency}.log"):
            load = load_average()
            started = time.perf_counter()
            progress = close_on_workers(settings, PERIOD, "bench", timeout=7200)
            seconds = time.perf_counter() - started
        worker_cpu = children_cpu() - cpu_before  # the worker and its pool, start to stop
    rendered = progress.done.get("render", 0)
    if rendered != orgs:
        raise SystemExit(f"{concurrency} worker process(es): {rendered} of {orgs} rendered")
    print(
        f"  {concurrency} worker process(es): {seconds:.1f} s ({progress.describe()})",
        file=sys.stderr,
        flush=True,
    )
    return {
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "invoices_rendered": rendered,
        "emails": progress.done.get("email", 0),
        "load_average_before": load,
        "worker_cpu_seconds": round(worker_cpu, 2),
        "worker_cpu_per_org": round(worker_cpu / orgs, 4),
    }


def children_cpu() -> float:  # float-ok: seconds
    """User and system CPU seconds of this process's ended (and waited-for) descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:  # float-ok: seconds
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def close_in_process(base_url: str, folder: Path, smtp_port: int, orgs: int) -> dict[str, Any]:
    """The same close in this process (`billing close` without a broker, one render process),
    its CPU: this process's and that of any process it started and waited for."""
    from billing.close.inline import close_period
    from billing.config import Settings

    with throwaway_database("billing_bench_inline") as database_url:
        env = worker_environment(database_url, base_url, folder, smtp_port)
        fields = {**_settings_fields(env), "broker_url": None, "render_processes": 1}
        fields["output_dir"] = folder / "in-process"
        fields.update(email_backend="smtp", smtp_url=env["BILLING_SMTP_URL"])
        fields["smtp_rate_per_second"] = float(env["BILLING_SMTP_RATE_PER_SECOND"])
        settings = Settings(_env_file=None, **fields)
        cpu_before = own_cpu() + children_cpu()
        started = time.perf_counter()
        result = close_period(settings, PERIOD, trigger="bench")
        seconds = time.perf_counter() - started
        cpu = own_cpu() + children_cpu() - cpu_before
    if result.pdfs_rendered != orgs:
        raise SystemExit(f"in process: {result.pdfs_rendered} of {orgs} statements rendered")
    print(f"  in process: {seconds:.1f} s, {cpu:.1f} s of CPU", file=sys.stderr, flush=True)
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_per_org": round(cpu / orgs, 4),
    }


def _settings_fields(env: dict[str, str]) -> dict[str, Any]:
    """The same settings as the worker's environment, for the process that follows the run."""
    return {
        "broker_url": env["BILLING_BROKER_URL"],
        "database_url": env["BILLING_DATABASE_URL"],
        "orgs": Path(env["BILLING_ORGS"]),
        "output_dir": Path(env["BILLING_OUTPUT_DIR"]),
        "mka1_base_url": env["MKA1_BASE_URL"],
        "mka1_api_key": env["MKA1_API_KEY"],
        "email_backend": "none",
    }


def run_bench(orgs: int, seed: int, page_size: int, pools: list[int]) -> dict[str, Any]:
    os.environ["BILLING_BROKER_URL"] = BROKER  # read when workers.celery_app is imported
    figures: dict[str, Any] = {
        "benchmark": "workers",
        "orgs": orgs,
        "period": str(PERIOD),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "runs": [],
        # Measured first: forking once Celery's client threads run could inherit a held lock.
        "cpu_loop_2_vs_1": parallel_capacity(),
    }
    sink = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    sink.start()
    try:
        with (
            TemporaryDirectory(prefix="billing-bench-workers-") as scratch,
            emulator_process(orgs, seed, page_size) as base_url,
        ):
            folder = Path(scratch)
            write_org_directory(folder / "orgs.yaml", orgs)
            figures["in_process"] = close_in_process(base_url, folder, sink.port, orgs)
            for concurrency in pools:
                figures["runs"].append(close_once(concurrency, base_url, folder, sink.port, orgs))
    finally:
        sink.stop()
    for run in figures["runs"]:  # the target: at most 1.2x the in-process CPU per org
        run["cpu_per_org_vs_in_process"] = round(
            run["worker_cpu_per_org"] / figures["in_process"]["cpu_per_org"], 2
        )
    by_pool = {run["concurrency"]: run["seconds"] for run in figures["runs"]}
    if 1 in by_pool and 2 in by_pool:
        speedup = by_pool[1] / by_pool[2]
        figures["speedup_2_vs_1"] = round(speedup, 2)
        # Of what the machine could give a second process at the time.
        figures["share_of_cpu_loop"] = round(speedup / figures["cpu_loop_2_vs_1"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--concurrency", default="1,2", help="worker pool sizes, one run each")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    pools = [int(size) for size in args.concurrency.split(",")]
    figures = run_bench(args.orgs, args.seed, args.page_size, pools)
    for run in figures["runs"]:
        print(
            f"close of {args.orgs:,} orgs on {run['concurrency']} Celery worker process(es): "
            f"{run['seconds']:.1f} s; CPU per org {run['worker_cpu_per_org']} s, "
            f"{run['cpu_per_org_vs_in_process']}x the in-process close's "
            f"({figures['in_process']['cpu_per_org']} s)"
        )
    if "speedup_2_vs_1" in figures:
        print(
            f"2 worker processes: {figures['speedup_2_vs_1']}x the speed of 1; a pure CPU loop "
            f"got {figures['cpu_loop_2_vs_1']}x from a second process at the time"
        )
    write_figures(args.results_dir, f"workers-{args.orgs}.json", figures)


if __name__ == "__main__":
    main()
