"""The distributed close on real Celery workers, real Redis and PostgreSQL: four worker
processes on two queues, a worker killed mid-render, the same close enqueued twice, and Redis
restarted during a run. Each ends with the in-process totals, no duplicates, one email per org."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import redis

from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, rows
from tests.support.processes import BIN, free_port, run_billing, start_billing
from tests.support.smtp_servers import RunningServer

# One pytest-xdist worker runs this module (`--dist loadgroup`): its tests share Redis database 13.
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REDIS_DB = 13  # this suite's own Redis database number
PERIOD = BillingPeriod.parse("2026-10")


@pytest.fixture
def clean_redis() -> Iterator[str]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()


def environment(
    broker: str, database_url: str, upstream: str, smtp_port: int, folder: Path
) -> dict[str, str]:
    return {
        "BILLING_BROKER_URL": broker,
        "BILLING_DATABASE_URL": database_url,
        "BILLING_OUTPUT_DIR": str(folder),
        "MKA1_BASE_URL": upstream,
        "MKA1_API_KEY": "k",
        "BILLING_EMAIL_BACKEND": "smtp",
        "BILLING_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "BILLING_SMTP_RETRY_SECONDS": "0.1",
        "BILLING_RATE_BATCH_ORGS": "3",
        "BILLING_CELERY_VISIBILITY_TIMEOUT_SECONDS": "60",
        "BILLING_CELERY_TASK_TIME_LIMIT_SECONDS": "45",
    }


class Workers:
    """Celery worker processes started for a test, each in its own process group."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.running: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, str] = {}
        self.started: dict[str, tuple[str, int]] = {}

    def start(self, name: str, queues: str, concurrency: int) -> None:
        self.started[name] = (queues, concurrency)
        self.running[name] = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "workers.celery_app",
                "worker",
                "-Q",
                queues,
                f"--concurrency={concurrency}",
                "-n",
                f"{name}@%h",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its pool processes: nothing is acknowledged or cleaned up."""
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        self.logs[name] = process.communicate(timeout=30)[0]

    def restart_exited(self) -> list[str]:
        """Start again each worker whose process has exited, as a supervisor would (compose's
        `restart: unless-stopped`); the names restarted."""
        exited = [name for name, process in self.running.items() if process.poll() is not None]
        for name in exited:
            self.logs[f"{name} (exited)"] = self.running.pop(name).communicate(timeout=30)[0]
            self.start(name, *self.started[name])
        return exited

    def stop_all(self) -> str:
        for name, process in self.running.items():
            os.killpg(process.pid, signal.SIGTERM)
            try:
                self.logs[name] = process.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                self.logs[name] = process.communicate(timeout=30)[0]
        self.running.clear()
        for name, log in self.logs.items():
            (self.cwd / f"worker-{name}.log").write_text(log, encoding="utf-8")
        return "\n".join(f"--- {name}\n{log[-12000:]}" for name, log in self.logs.items())


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Workers]]:
    started: list[Workers] = []

    def make(env: dict[str, str]) -> Workers:
        group = Workers(env, tmp_path)
        started.append(group)
        return group

    yield make
    for group in started:
        group.stop_all()


def in_process_totals(upstream: str, database_url: str, folder: Path) -> dict[str, object]:
    closed = run_billing(
        "close",
        "--period",
        str(PERIOD),
        env={
            "MKA1_BASE_URL": upstream,
            "MKA1_API_KEY": "k",
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(folder),
            "BILLING_EMAIL_BACKEND": "none",
            "BILLING_BROKER_URL": "",
        },
        cwd=folder.parent,
    )
    assert closed.returncode == 0, closed.stderr
    return dict(assert_period_agrees(database_url, folder / "2026-10", "2026-10"))


def messages_per_org(smtp_server: RunningServer, database_url: str) -> Counter[str]:
    """How many statement emails each org got, by the PDF attached (named after the invoice)."""
    org_of = {
        str(number): str(org)
        for number, org in rows(database_url, "SELECT number, org_id FROM invoice")
        if number
    }
    orgs: Counter[str] = Counter()
    for received in smtp_server.recorder.messages:
        message = message_from_bytes(received.content, policy=policy.default)
        names = [str(part.get_filename()) for part in message.iter_attachments()]  # type: ignore[attr-defined]
        orgs.update(org_of[name.removesuffix(".pdf")] for name in names if name.endswith(".pdf"))
    return orgs


def assert_no_duplicates(database_url: str, orgs: int) -> None:
    assert rows(database_url, "SELECT count(*) FROM invoice WHERE status <> 'void'") == [(orgs,)]
    assert (
        rows(
            database_url,
            "SELECT invoice_id, meter, api_key_id, user_id FROM invoice_line "
            "GROUP BY invoice_id, meter, api_key_id, user_id, charge_class "
            "HAVING count(*) > 1",
        )
        == []
    )


def test_four_worker_processes_on_two_queues_match_the_in_process_close(
    clean_redis: str,
    pg_server_url: Callable[[], str],
    smtp_server: RunningServer,
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    worker_db, local_db = pg_server_url(), pg_server_url()
    with running_emulator(orgs=8, seed=4, page_size=100) as upstream:
        env = environment(clean_redis, worker_db, upstream, smtp_server.port, tmp_path / "w")
        group = workers(env)
        group.start("fetch-email", "billing.fetch,billing.email", 2)
        group.start("render", "billing.render", 2)
        closed = run_billing("close", "--period", str(PERIOD), env=env, cwd=tmp_path)
        logs = group.stop_all()
        assert closed.returncode == 0, f"{closed.stderr}\n{logs}"
        assert "closed 2026-10 on the workers" in closed.stdout
        expected = in_process_totals(upstream, local_db, tmp_path / "local")
    totals = assert_period_agrees(worker_db, tmp_path / "w" / "2026-10", "2026-10")
    assert totals == expected
    assert_no_duplicates(worker_db, len(expected))
    with_contact = rows(worker_db, "SELECT org_id FROM invoice WHERE contact_emails <> ''")
    assert messages_per_org(smtp_server, worker_db) == Counter(org for (org,) in with_contact)
    ((status, stage, batches),) = rows(
        worker_db, "SELECT status, stage, batches_total FROM billing_run"
    )
    assert (status, stage, batches) == ("succeeded", "reporting", 3)  # 8 orgs, 3 a batch


def _run_id(database_url: str, deadline: float) -> int:
    while time.monotonic() < deadline:
        found = rows(database_url, "SELECT id FROM billing_run") if _has_runs(database_url) else []
        if found:
            return int(str(found[0][0]))
        time.sleep(0.1)
    raise AssertionError("no run started")


def _has_runs(database_url: str) -> bool:
    try:
        rows(database_url, "SELECT 1 FROM billing_run LIMIT 1")
    except Exception:
        return False
    return True


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _done(database_url: str, stage: str) -> int:
    found = rows(
        database_url,
        f"SELECT count(*) FROM run_task WHERE stage = '{stage}' AND status = 'done'",  # noqa: S608
    )
    return int(str(found[0][0]))


# Which worker serves each step here: killing it kills the step in flight.
KILLED_WORKER = {"rate": "fetch-email", "render": "render", "email": "fetch-email"}


@pytest.mark.parametrize("stage", ["rate", "render", "email"])
def test_a_worker_killed_mid_step_is_replaced_and_the_run_completes_exactly_once(
    stage: str,
    clean_redis: str,
    pg_server_url: Callable[[], str],
    smtp_server: RunningServer,
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    worker_db, local_db = pg_server_url(), pg_server_url()
    with running_emulator(orgs=16, seed=6, page_size=200) as upstream:
        env = environment(clean_redis, worker_db, upstream, smtp_server.port, tmp_path / "w")
        env["BILLING_RATE_BATCH_ORGS"] = "2"
        group = workers(env)
        group.start("fetch-email", "billing.fetch,billing.email", 1)
        group.start("render", "billing.render", 1)
        close = start_billing("close", "--period", str(PERIOD), env=env, cwd=tmp_path)
        _run_id(worker_db, time.monotonic() + 60)
        _wait_for(lambda: _done(worker_db, stage) >= 1, f"the first {stage} step")
        killed = KILLED_WORKER[stage]
        group.kill(killed)
        done_before_restart = _done(worker_db, stage)
        group.start(
            killed, "billing.render" if killed == "render" else "billing.fetch,billing.email", 1
        )
        swept = run_billing("runs", "sweep", "--stalled-after", "0", env=env, cwd=tmp_path)
        assert swept.returncode == 0, swept.stderr
        _out, errors = close.communicate(timeout=300)
        logs = group.stop_all()
        assert close.returncode == 0, f"{errors}\n{logs}"
        expected = in_process_totals(upstream, local_db, tmp_path / "local")
    assert done_before_restart < (8 if stage == "rate" else len(expected))
    totals = assert_period_agrees(worker_db, tmp_path / "w" / "2026-10", "2026-10")
    assert totals == expected
    assert_no_duplicates(worker_db, len(expected))
    pdfs = sorted(path.name for path in (tmp_path / "w" / "2026-10").glob("org-*.pdf"))
    assert pdfs == sorted(f"{org}.pdf" for org in expected)
    with_contact = rows(worker_db, "SELECT org_id FROM invoice WHERE contact_emails <> ''")
    # A worker killed between claiming a delivery and the server's reply leaves it `unknown`:
    # the server may have the message, so it is never sent again by itself. So: nobody gets
    # a statement twice, and everyone gets one except at most that one delivery.
    unknown = {
        str(org)
        for (org,) in rows(
            worker_db,
            "SELECT i.org_id FROM email_delivery d JOIN invoice i ON i.id = d.invoice_id "
            "WHERE d.status = 'unknown'",
        )
    }
    assert len(unknown) <= (1 if stage == "email" else 0)
    received = messages_per_org(smtp_server, worker_db)
    assert set(received.values()) <= {1}
    assert set(received) | unknown == {str(org) for (org,) in with_contact}
    assert rows(
        worker_db, "SELECT count(*) FROM email_delivery WHERE status NOT IN ('sent', 'unknown')"
    ) == [(0,)]


def test_the_same_close_enqueued_twice_runs_once(
    clean_redis: str,
    pg_url: str,
    smtp_server: RunningServer,
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    with running_emulator(orgs=5, seed=2, page_size=100) as upstream:
        env = environment(clean_redis, pg_url, upstream, smtp_server.port, tmp_path / "w")
        group = workers(env)
        group.start("all", "billing.fetch,billing.render,billing.email", 2)
        first = start_billing("close", "--period", str(PERIOD), env=env, cwd=tmp_path)
        second = start_billing("close", "--period", str(PERIOD), env=env, cwd=tmp_path)
        answers = [process.communicate(timeout=300) for process in (first, second)]
        group.stop_all()
    codes = sorted(process.returncode for process in (first, second))
    assert codes == [0, 1], answers
    refused = next(
        err for (_out, err), p in zip(answers, (first, second), strict=True) if p.returncode
    )
    assert "did not start" in refused
    assert rows(pg_url, "SELECT status FROM billing_run") == [("succeeded",)]
    assert_no_duplicates(pg_url, 5)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """A redis-server of this test's own (append-only file on) and a way to restart it hard."""
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
    ]
    state: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        state["server"] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port)
        _wait_for(lambda: _pings(client), "redis to start", 20)

    def restart() -> None:
        state["server"].send_signal(signal.SIGKILL)
        state["server"].wait(timeout=10)
        time.sleep(1)
        start()

    start()
    restart.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    yield restart
    state["server"].send_signal(signal.SIGKILL)
    state["server"].wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_restarted_during_a_run_and_the_run_still_completes(
    private_redis: Callable[[], None],
    pg_url: str,
    smtp_server: RunningServer,
    workers: Callable[[dict[str, str]], Workers],
    tmp_path: Path,
) -> None:
    broker = str(private_redis.url)  # type: ignore[attr-defined]
    with running_emulator(orgs=12, seed=8, page_size=100) as upstream:
        env = environment(broker, pg_url, upstream, smtp_server.port, tmp_path / "w")
        group = workers(env)
        group.start("all", "billing.fetch,billing.render,billing.email", 2)
        close = start_billing("close", "--period", str(PERIOD), env=env, cwd=tmp_path)
        _run_id(pg_url, time.monotonic() + 60)
        _wait_for(lambda: _done(pg_url, "render") >= 1, "the first render")
        private_redis()
        # Messages sent while Redis was down are lost; beat's sweep re-enqueues their steps.
        # Here the test plays beat, with no stall allowance, and the supervisor: a worker that
        # loses Redis while it holds a message not yet started can exit (kombu restores the
        # unacknowledged message over the closed connection and fails), and is started again.
        deadline = time.monotonic() + 150
        restarted: list[str] = []
        while close.poll() is None and time.monotonic() < deadline:
            time.sleep(3)
            restarted += group.restart_exited()
            run_billing("runs", "sweep", "--stalled-after", "0", env=env, cwd=tmp_path)
        state = rows(pg_url, "SELECT stage, status, count(*) FROM run_task GROUP BY stage, status")
        if close.poll() is None:
            close.kill()
        _out, errors = close.communicate(timeout=60)
        logs = group.stop_all()
    assert close.returncode == 0, f"{errors}\n{state}\n{logs}"
    assert len(restarted) <= 1, restarted
    assert rows(pg_url, "SELECT status FROM billing_run") == [("succeeded",)]
    assert_period_agrees(pg_url, tmp_path / "w" / "2026-10", "2026-10")
    assert_no_duplicates(pg_url, 12)
    with_contact = {
        org for (org,) in rows(pg_url, "SELECT org_id FROM invoice WHERE contact_emails <> ''")
    }
    deliveries = rows(
        pg_url, "SELECT org_id, status FROM email_delivery ORDER BY org_id, recipient"
    )
    # An email task running when Redis went away is cancelled (the connection loss policy);
    # if it had claimed its deliveries, they may or may not have reached the server: they end
    # `unknown`, for a person to check, and are never resent by themselves. Every other org
    # with a contact gets exactly one message, and nothing is left pending.
    cut_off = {org for org, status in deliveries if status == "unknown"}
    assert {status for _org, status in deliveries} <= {"sent", "unknown"}, deliveries
    assert all(status == "unknown" for org, status in deliveries if org in cut_off), deliveries
    received = messages_per_org(smtp_server, pg_url)
    assert set(received.values()) <= {1}, received
    assert set(received) | cut_off == with_contact, (received, deliveries)
    assert len(cut_off) <= 2, deliveries  # at most the emails in flight when Redis died
