"""Signing in to the console on SQLite and PostgreSQL: the login form's own token, cookie
flags, slowed failures, same-site landing only, sign-out ending the session, the page headers,
and console errors as pages while the API keeps its JSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from billing.config import Settings
from billing.db.engine import ledger
from billing.states import Role
from billing.web.app import create_app
from billing.web.console.session import SESSION_COOKIE
from tests.support.console import PASSWORD, USERS, add_console_users, csrf_of, sign_in


@pytest.fixture
def client(make_settings: Callable[..., Settings], database_url: str) -> Iterator[TestClient]:
    settings = make_settings(database_url=database_url)
    with ledger(settings):
        pass
    add_console_users(settings)
    with TestClient(create_app(settings), base_url="http://testserver") as served:
        yield served


def login(client: TestClient, name: str, password: str, **extra: str) -> object:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": token, **extra},
        follow_redirects=False,
    )


def test_pages_send_the_visitor_to_the_login_page_and_back(client: TestClient) -> None:
    answer = client.get("/periods?x=<1>", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fperiods%3Fx%3D%253C1%253E"

    page = client.get(answer.headers["location"])
    assert 'name="next" value="/periods?x=%3C1%3E"' in page.text
    shown = client.get("/login", params={"next": '/periods?"><b>'})
    assert 'value="/periods?&#34;&gt;&lt;b&gt;"' in shown.text
    cookie = page.headers["set-cookie"]
    assert "billing_login_csrf=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie

    signed = login(client, USERS[Role.VIEWER], PASSWORD, next="/periods?x=%3C1%3E")
    assert signed.status_code == 303  # type: ignore[attr-defined]
    assert signed.headers["location"] == "/periods?x=%3C1%3E"  # type: ignore[attr-defined]
    session_cookie = signed.headers["set-cookie"]  # type: ignore[attr-defined]
    assert f"{SESSION_COOKIE}=" in session_cookie
    assert "HttpOnly" in session_cookie
    assert "SameSite=strict" in session_cookie
    periods = client.get("/periods")
    assert periods.status_code == 200
    assert USERS[Role.VIEWER] in periods.text
    assert ">viewer<" in periods.text


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_a_sign_in_lands_only_on_a_page_of_this_site(client: TestClient, target: str) -> None:
    signed = login(client, USERS[Role.VIEWER], PASSWORD, next=target)
    assert signed.headers["location"] == "/periods"  # type: ignore[attr-defined]


def test_a_login_without_the_form_token_or_with_a_wrong_password_is_refused(
    client: TestClient,
) -> None:
    client.get("/login")
    forged = client.post(
        "/login", data={"name": USERS[Role.ADMIN], "password": PASSWORD}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert "security token is missing or out of date" in forged.text
    assert SESSION_COOKIE not in forged.headers.get("set-cookie", "")

    wrong = login(client, USERS[Role.ADMIN], "not the password at all")
    assert wrong.status_code == 401  # type: ignore[attr-defined]
    assert "wrong name or password" in wrong.text  # type: ignore[attr-defined]
    assert client.get("/periods", follow_redirects=False).status_code == 303


def test_repeated_failures_are_slowed_even_for_the_right_password(client: TestClient) -> None:
    statuses = []
    for _attempt in range(10):  # the wait doubles from the fourth failure: 1, 2, 4... s
        answer = login(client, USERS[Role.APPROVER], "guessing again and again")
        statuses.append(answer.status_code)  # type: ignore[attr-defined]
        if answer.status_code == 429:  # type: ignore[attr-defined]
            assert int(answer.headers["retry-after"]) >= 1  # type: ignore[attr-defined]
            assert "too many failed sign-ins" in answer.text  # type: ignore[attr-defined]
            break
    assert statuses[:3] == [401, 401, 401]
    assert statuses[-1] == 429
    right = login(client, USERS[Role.APPROVER], PASSWORD)
    assert right.status_code == 429  # type: ignore[attr-defined]


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(client: TestClient) -> None:
    csrf = sign_in(client, USERS[Role.ADMIN])
    cookie = client.cookies[SESSION_COOKIE]
    refused = client.post("/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403  # a sign-out needs the token too
    out = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/login"
    client.cookies.set(SESSION_COOKIE, cookie)  # a copy kept elsewhere no longer works
    assert client.get("/periods", follow_redirects=False).headers["location"].startswith("/login")


def test_pages_carry_a_strict_policy_and_errors_stay_pages_or_json(client: TestClient) -> None:
    sign_in(client, USERS[Role.VIEWER])
    page = client.get("/periods")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"

    missing = client.get("/no/such/page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert 'id="error-message"' in missing.text

    api = client.get("/api/v1/invoices")
    assert api.status_code == 401
    assert api.json()["error"].startswith("sign in")

    assert client.get("/static/console.js").status_code == 200
    assert client.get("/static/../../pyproject.toml").status_code == 404


def test_cookies_are_secure_when_the_console_is_reached_over_tls(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    with ledger(settings):
        pass
    add_console_users(settings)
    with TestClient(create_app(settings), base_url="https://console.example") as served:
        signed = login(served, USERS[Role.ADMIN], PASSWORD)
        assert "Secure" in signed.headers["set-cookie"]  # type: ignore[attr-defined]
