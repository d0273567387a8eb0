"""What the benchmarks share: loopback ports, the emulator process, throwaway PostgreSQL
databases, and per-stage clocks with the peak resident memory of each stage."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"
PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
KIB = 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator(orgs: int, seed: int, page_size: int) -> tuple[subprocess.Popen[bytes], str]:
    """`billing emulator` as its own process on a free loopback port, and its base URL."""
    port = free_port()
    command = [str(BIN / "billing"), "emulator", "--port", str(port), "--orgs", str(orgs)]
    command += ["--seed", str(seed), "--page-size", str(page_size)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            httpx.get(url, timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the emulator did not start")


@contextmanager
def emulator_process(orgs: int, seed: int, page_size: int) -> Iterator[str]:
    process, url = start_emulator(orgs, seed, page_size)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def pg_admin_user(host: str, port: int) -> str:
    """The first of postgres/root that the trust-auth server accepts (the tests use it too)."""
    problems = []
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=host, port=port, user=user, dbname="postgres", connect_timeout=5
            ):
                return user
        except psycopg.OperationalError as error:
            problems.append(f"{user}: {str(error).strip()}")
    raise RuntimeError(
        f"PostgreSQL is not reachable at {host}:{port} ({'; '.join(problems)}); "
        "start it with scripts/ensure-services.sh"
    )


def _admin_user() -> str:
    """The bench's admin user; an unreachable server ends the benchmark with one line."""
    try:
        return pg_admin_user(PG_HOST, PG_PORT)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


@contextmanager
def throwaway_database(prefix: str = "billing_bench") -> Iterator[str]:
    """A fresh PostgreSQL database for one run, dropped afterwards whatever happens."""
    user = _admin_user()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- memory and clocks


def _status_kib(field_name: str) -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    """Make the kernel's peak RSS (VmHWM) start again from the current RSS (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (since the last reset), in MiB."""
    peak = _status_kib("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / KIB


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended, user and system."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def children_peak_rss_mib() -> float:
    """The largest peak RSS of the child processes reaped so far (e.g. rendering workers)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / KIB


@dataclass
class Stage:
    """One stage's figures: wall time, how much it did, and the peak RSS while it ran."""

    name: str
    seconds: float = 0.0
    count: int = 0
    unit: str = ""
    peak_rss_mib: float = 0.0
    cpu_seconds: float = 0.0  # this process's and its reaped children's (render workers)
    floor_seconds: float | None = None
    floor: str = ""
    # When the floor ran on a sample, the ratio is the project's time on that same sample
    # against the floor's, not the whole stage's time against it.
    sample_ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float | None:
        return self.count / self.seconds if self.seconds > 0 and self.count else None

    @property
    def ratio(self) -> float | None:
        if self.sample_ratio is not None:
            return self.sample_ratio
        if self.floor_seconds is None or self.floor_seconds <= 0:
            return None
        return self.seconds / self.floor_seconds

    def as_json(self) -> dict[str, object]:
        return {
            "stage": self.name,
            "seconds": round(self.seconds, 3),
            "count": self.count,
            "unit": self.unit,
            "per_second": None if self.per_second is None else round(self.per_second, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "floor": self.floor or None,
            "floor_seconds": None if self.floor_seconds is None else round(self.floor_seconds, 3),
            "ratio_to_floor": None if self.ratio is None else round(self.ratio, 2),
            "notes": self.notes,
        }


@dataclass
class StageClock:
    """Times stages one after the other; each stage's peak RSS is its own (VmHWM is reset)."""

    stages: list[Stage] = field(default_factory=list)
    peak_is_per_stage: bool = True
    verbose: bool = True

    @contextmanager
    def stage(self, name: str, unit: str = "") -> Iterator[Stage]:
        measured = Stage(name, unit=unit)
        self.peak_is_per_stage = _reset_peak_rss() and self.peak_is_per_stage
        started, cpu_started = time.perf_counter(), cpu_seconds()
        try:
            yield measured
        finally:
            measured.seconds = time.perf_counter() - started
            measured.cpu_seconds = cpu_seconds() - cpu_started
            measured.peak_rss_mib = peak_rss_mib()
            self.stages.append(measured)
            if self.verbose:
                print(f"  {name}: {measured.seconds:.2f}s", file=sys.stderr, flush=True)

    def named(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)


def load_average() -> float:
    """The one-minute load average: other work on the machine skews the figures."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def _spin(iterations: int) -> int:
    total = 0
    for number in range(iterations):
        total += number * number % 7
    return total


def parallel_capacity(iterations: int = 3_000_000) -> float:
    """How much faster two processes get through a pure CPU loop than one, right now: the
    most any two-process speed-up can reach on this machine at this moment (other work and
    shared cores lower it from 2)."""
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    for _ in range(4):
        _spin(iterations)
    one = time.perf_counter() - started
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_spin, [1, 1]))
        started = time.perf_counter()
        list(pool.map(_spin, [iterations] * 4))
        two = time.perf_counter() - started
    return round(one / two, 2)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = ""
    try:
        cpu_info = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", cpu_info, re.MULTILINE)
        cpu = found.group(1).strip() if found else ""
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=_admin_user(), dbname="postgres") as pg:
        row = pg.execute("SHOW server_version").fetchone()
    import weasyprint

    return {
        "cpu": cpu or platform.processor(),
        "cpus": usable,
        "python": platform.python_version(),
        "postgresql": row[0] if row else "",
        "weasyprint": weasyprint.__version__,
        "platform": platform.platform(),
    }


def write_figures(folder: Path, name: str, figures: object) -> Path:
    """A benchmark's figures as JSON in `folder` (made if missing), and say where."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {path}")
    return path
