"""Console users for tests: one per role with a known password, and an in-process client
(the real app over the real ledger) signed in as one of them, its forms' CSRF token at hand."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.testclient import TestClient

from billing.config import Settings
from billing.finance.access import add_user
from billing.states import Role
from billing.web.app import create_app

PASSWORD = "correct horse battery staple"
USERS = {Role.VIEWER: "vera-viewer", Role.APPROVER: "april-approver", Role.ADMIN: "adam-admin"}
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_console_users(settings: Settings) -> None:
    """vera-viewer, april-approver and adam-admin, all with PASSWORD (the admin first)."""
    for role in (Role.ADMIN, Role.APPROVER, Role.VIEWER):
        add_user(settings, USERS[role], role, PASSWORD, actor="test")


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF_INPUT.search(html)
    assert found, "no form with a CSRF token on this page"
    return found.group(1)


@dataclass
class ConsoleSession:
    """A client signed in to the console, and its session's CSRF token."""

    client: TestClient
    csrf: str

    def post(self, path: str, confirmed: bool = True, **fields: str) -> object:
        """A form post with the session's token (confirmed unless told otherwise); the answer
        is not followed, so a redirect's Location can be checked."""
        data = {"csrf_token": self.csrf, **fields}
        if confirmed:
            data["confirmed"] = "yes"
        return self.client.post(path, data=data, follow_redirects=False)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Sign in through the login form; the CSRF token of the page it lands on."""
    login = client.get("/login")
    answer = client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": csrf_of(login.text)},
        follow_redirects=True,
    )
    assert answer.status_code == 200, answer.text[-500:]
    return csrf_of(answer.text)


@contextmanager
def console_session(settings: Settings, role: Role) -> Iterator[ConsoleSession]:
    """The app for these settings (its startup and shutdown run), signed in as the user of
    `role` made by add_console_users."""
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        yield ConsoleSession(client, sign_in(client, USERS[role]))
