"""The guard of the unit layer: no network and no database while it is active.

tests/unit/conftest.py holds it around every unit test's setup, call and teardown.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine.base import Engine

NETWORK = (socket.AF_INET, socket.AF_INET6)


class UnitLayerViolation(AssertionError):
    """A unit test reached for the network or a database; move it to tests/integration."""


def _refuse(what: str) -> UnitLayerViolation:
    return UnitLayerViolation(
        f"unit tests use no network and no database: {what} (move the test to tests/integration)"
    )


@contextmanager
def no_network_no_database() -> Iterator[None]:
    patch = pytest.MonkeyPatch()
    real = {name: getattr(socket.socket, name) for name in ("connect", "connect_ex", "bind")}
    real_sendto = socket.socket.sendto

    def guarded(name: str) -> Any:
        def method(self: socket.socket, address: object, *args: object) -> object:
            if self.family in NETWORK:
                raise _refuse(f"socket.{name}({address!r})")
            return real[name](self, address, *args)

        return method

    def sendto(self: socket.socket, *args: Any) -> int:
        if self.family in NETWORK:
            raise _refuse(f"socket.sendto({args[-1]!r})")
        return real_sendto(self, *args)

    def no_engine(self: Engine, *args: object, **kwargs: object) -> None:
        url = args[2] if len(args) > 2 else kwargs.get("url")
        raise _refuse(f"a SQLAlchemy engine for {url!r}")

    def no_psycopg(*args: object, **kwargs: object) -> None:
        raise _refuse("a psycopg connection")

    try:
        for name in real:
            patch.setattr(socket.socket, name, guarded(name))
        patch.setattr(socket.socket, "sendto", sendto)
        patch.setattr(Engine, "__init__", no_engine)
        patch.setattr(psycopg, "connect", no_psycopg)
        patch.setattr(psycopg.Connection, "connect", classmethod(no_psycopg))
        patch.setattr(psycopg.AsyncConnection, "connect", classmethod(no_psycopg))
        yield
    finally:
        patch.undo()
