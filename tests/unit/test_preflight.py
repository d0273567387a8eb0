"""The preflight's pure checks: the period has ended, the settings work, nothing is written."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from billing.close.preflight import (
    Operation,
    check_api_key,
    check_email_settings,
    check_locale,
    check_output_folder,
    check_period_ended,
    check_templates,
    is_month_to_date,
)
from billing.config import Settings
from billing.db.engine import parse_database_url
from billing.errors import ConfigError, PeriodError
from billing.periods import BillingPeriod

NOVEMBER = BillingPeriod.parse("2026-11")
MID_NOVEMBER = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_a_month_that_has_not_begun_is_refused_even_as_a_draft() -> None:
    for draft in (False, True):
        with pytest.raises(PeriodError) as refused:
            check_period_ended(
                BillingPeriod.parse("2030-01"), MID_NOVEMBER, Operation.CLOSE, draft=draft
            )
        assert str(refused.value) == (
            "2030-01 has not begun (today is 2026-11-15 UTC): nothing can be billed for it yet; "
            "the last month that can be closed is 2026-10"
        )


def test_the_running_month_is_refused_but_a_draft_of_it_is_month_to_date() -> None:
    with pytest.raises(PeriodError, match=r"2026-11 has not ended \(it ends 2026-12-01"):
        check_period_ended(NOVEMBER, MID_NOVEMBER, Operation.CLOSE)
    with pytest.raises(PeriodError, match="finalize it after that"):
        check_period_ended(NOVEMBER, MID_NOVEMBER, Operation.FINALIZE, draft=True)
    check_period_ended(NOVEMBER, MID_NOVEMBER, Operation.CLOSE, draft=True)
    assert is_month_to_date(NOVEMBER, MID_NOVEMBER)
    ended = datetime(2026, 12, 1, tzinfo=UTC)
    check_period_ended(NOVEMBER, ended, Operation.FINALIZE)
    assert not is_month_to_date(NOVEMBER, ended)


def test_an_unknown_locale_is_one_line_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as refused:
        check_locale("xx_YY")
    assert str(refused.value) == (
        "setting BILLING_LOCALE: 'xx_YY' is not a locale Babel knows; "
        "use one like en_US, de_DE or ja_JP"
    )
    check_locale("de_DE")


def test_an_output_folder_under_a_file_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="afile is a file, not a folder"):
        check_output_folder(blocker / "out", NOVEMBER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_writable_output_folder_passes_without_a_trace(tmp_path: Path) -> None:
    check_output_folder(tmp_path / "not" / "yet", NOVEMBER)
    assert list(tmp_path.iterdir()) == []  # tried in the nearest existing parent, then removed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(ConfigError, match="cannot write in"):
            check_output_folder(locked / "statements", NOVEMBER)
    finally:
        locked.chmod(0o755)


def test_a_missing_or_empty_api_key_is_said_before_any_call() -> None:
    with pytest.raises(ConfigError, match="MKA1_API_KEY is not set"):
        check_api_key(settings(mka1_api_key=None))
    for blank in ("", "   "):
        with pytest.raises(ConfigError, match="MKA1_API_KEY is empty"):
            check_api_key(settings(mka1_api_key=SecretStr(blank)))
    check_api_key(settings(mka1_api_key=SecretStr("key")))


def test_a_broken_template_override_names_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "statement.html").write_text("<p>\n{% if %}\n</p>\n")
    with pytest.raises(ConfigError, match=r"statement.html:2: "):
        check_templates(tmp_path)
    with pytest.raises(ConfigError, match="is not a folder"):
        check_templates(tmp_path / "missing")
    check_templates(None)


def test_a_bad_sender_is_refused() -> None:
    with pytest.raises(ConfigError, match="setting BILLING_EMAIL_FROM"):
        check_email_settings(settings(email_from="not an address"))
    check_email_settings(settings())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@localhost/db", "'mysql' databases are not supported"),
        ("foo://x", "'foo' databases are not supported"),
        ("::not a url", "is not a database URL"),
    ],
)
def test_an_unsupported_database_url_is_one_line_without_the_password(
    url: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        parse_database_url(url)
    assert "secret" not in str(refused.value)
    assert parse_database_url("postgresql://u@h/db").get_backend_name() == "postgresql"
