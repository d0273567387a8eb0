"""The unit layer refuses the network and databases (tests/unit/conftest.py), and nothing else."""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

import psycopg
import pytest

from billing.db.engine import make_engine
from tests.support.unit_guard import UnitLayerViolation


def test_a_loopback_connection_is_refused() -> None:
    with pytest.raises(UnitLayerViolation, match=r"127\.0\.0\.1"):
        socket.create_connection(("127.0.0.1", 5432), timeout=1)
    with pytest.raises(UnitLayerViolation), smtplib.SMTP("127.0.0.1", 25, timeout=1):
        pass


def test_a_listening_server_is_refused() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with server, pytest.raises(UnitLayerViolation, match="bind"):
        server.bind(("127.0.0.1", 0))


def test_a_ledger_engine_is_refused_on_sqlite_and_on_postgresql(tmp_path: Path) -> None:
    with pytest.raises(UnitLayerViolation, match="engine"):
        make_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    with pytest.raises(UnitLayerViolation, match="engine"):
        make_engine("postgresql://postgres@127.0.0.1:5432/postgres")
    with pytest.raises(UnitLayerViolation, match="psycopg"):
        psycopg.connect("host=127.0.0.1 dbname=postgres")
    assert not (tmp_path / "billing.db").exists()


def test_pipes_between_processes_still_work() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"statement")
        assert right.recv(16) == b"statement"
