"""A close sent through Redis to a real Celery worker gives the same ledger as in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.agreement import assert_period_agrees, database_totals

BIN = Path(sys.executable).parent
REDIS_DB = 13  # this suite's own Redis database number
BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"
PERIOD = BillingPeriod.parse("2026-10")


@pytest.fixture
def clean_redis() -> Iterator[None]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    yield
    client.flushdb()


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.usefixtures("clean_redis")
def test_close_on_a_real_worker_matches_the_in_process_close(
    pg_server_url: object, tmp_path: Path
) -> None:
    create_database = pg_server_url
    assert callable(create_database)
    worker_db, local_db = create_database(), create_database()
    with running_emulator(orgs=5, seed=4, page_size=100) as base_url:
        common = {
            "MKA1_BASE_URL": base_url,
            "MKA1_API_KEY": "k",
            "BILLING_EMAIL_BACKEND": "none",
        }
        worker_env = {
            **os.environ,
            **common,
            "BILLING_BROKER_URL": BROKER,
            "BILLING_DATABASE_URL": worker_db,
            "BILLING_OUTPUT_DIR": str(tmp_path / "worker"),
        }
        worker = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "workers.celery_app",
                "worker",
                "-Q",
                "close",
                "--pool=solo",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            env=worker_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            on_workers = subprocess.run(
                [str(BIN / "billing"), "close", "--period", str(PERIOD)],
                env=worker_env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=240,
            )
        finally:
            worker.terminate()
            worker_log, _ = worker.communicate(timeout=30)
        assert on_workers.returncode == 0, f"{on_workers.stderr}\nworker log:\n{worker_log}"
        assert "closed 2026-10 on the workers" in on_workers.stdout
        in_process = subprocess.run(
            [str(BIN / "billing"), "close", "--period", str(PERIOD)],
            env={
                **os.environ,
                **common,
                "BILLING_DATABASE_URL": local_db,
                "BILLING_OUTPUT_DIR": str(tmp_path / "local"),
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert in_process.returncode == 0, in_process.stderr
    worker_totals = assert_period_agrees(worker_db, tmp_path / "worker" / "2026-10", "2026-10")
    local_totals = assert_period_agrees(local_db, tmp_path / "local" / "2026-10", "2026-10")
    assert worker_totals == local_totals
    assert len(database_totals(worker_db, "2026-10")) == 5
