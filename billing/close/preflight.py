"""The checks a close, re-rate or finalize passes before anything is numbered, written or sent."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

from babel import Locale, UnknownLocaleError
from jinja2 import TemplateError, TemplateNotFound, TemplateSyntaxError
from sqlalchemy import select
from sqlmodel import Session, col

from billing.addresses import parse_mailbox, parse_smtp_url
from billing.catalog.webhooks import load_webhooks
from billing.close.pricing import Pricing
from billing.config import Settings
from billing.db.engine import existing_ledger, parse_database_url
from billing.db.tables import BillingRun, Invoice
from billing.errors import ConfigError, InvoiceStateError, LedgerMissing, PeriodError, StorageError
from billing.periods import BillingPeriod
from billing.statements import formatting
from billing.statements.pdf import template_environment
from billing.states import InvoiceStatus

# Every template a close renders: statements (and the masthead they import), the run report
# and the emails.
TEMPLATES = (
    "statement.html",
    "masthead.html",
    "report.html",
    "email/subject.txt",
    "email/statement.txt",
    "email/statement.html",
    "email/void_subject.txt",
    "email/void_notice.txt",
    "email/budget_subject.txt",
    "email/budget_alert.txt",
)


class Operation(StrEnum):
    """What is about to run: each needs a different part of the checks."""

    CLOSE = "close"
    RERATE = "rerate"
    FINALIZE = "finalize"


def preflight(
    settings: Settings,
    period: BillingPeriod,
    operation: Operation,
    *,
    now: datetime,
    draft: bool = False,
    pricing: Pricing | None = None,
    org_ids: Sequence[str] = (),
) -> None:
    """Every check of a run, read-only, before its first write: the period has ended (or this
    is a month-to-date draft), the settings work on this host, the API key is there (a close),
    the database can be used and each `--org` is known. Raises one BillingError naming what,
    where and what to do."""
    check_period_ended(period, now, operation, draft=draft)
    check_locale(settings.locale, pricing)
    check_templates(settings.templates_dir)
    check_email_settings(settings)
    check_webhook_endpoints(settings)
    check_output_folder(settings.output_dir, period)
    if operation == Operation.CLOSE:
        check_api_key(settings)
    check_database(settings)
    if org_ids and pricing is not None:
        check_orgs_known(settings, pricing, org_ids)


def is_month_to_date(period: BillingPeriod, now: datetime) -> bool:
    """True while the period is running: it has begun and not ended."""
    return period.start <= now < period.end


def check_period_ended(
    period: BillingPeriod, now: datetime, operation: Operation, *, draft: bool = False
) -> None:
    """Refuse a month that has not ended, except a draft of the running month (month-to-date)."""
    if now >= period.end:
        return
    if now < period.start:
        raise PeriodError(
            f"{period} has not begun (today is {now:%Y-%m-%d} UTC): nothing can be billed for it "
            f"yet; the last month that can be closed is {BillingPeriod.previous_to(now)}"
        )
    if draft and operation != Operation.FINALIZE:
        return
    instead = {
        Operation.CLOSE: f"or billing close --period {period} --draft for month-to-date drafts",
        Operation.RERATE: f"or billing rerate --period {period} --draft for month-to-date drafts",
        Operation.FINALIZE: "until then its drafts stay drafts",
    }[operation]
    raise PeriodError(
        f"{period} has not ended (it ends {period.end:%Y-%m-%d} 00:00 UTC): {operation} it "
        f"after that, {instead}"
    )


def check_drafts_cover_month(session: Session, period: BillingPeriod) -> None:
    """Drafts rated before their month ended (month-to-date) are never numbered: they miss the
    rest of the month, so the month is closed again first."""
    early = session.execute(
        select(col(BillingRun.id), col(BillingRun.started_at))
        .join(Invoice, col(Invoice.run_id) == col(BillingRun.id))
        .where(col(Invoice.period) == str(period), col(Invoice.status) == InvoiceStatus.DRAFT)
        .distinct()
    ).all()
    for run_id, started_at in sorted(early):
        if started_at < period.end:
            raise InvoiceStateError(
                f"the drafts of {period} are month-to-date (run {run_id} rated them on "
                f"{started_at:%Y-%m-%d %H:%M} UTC, before the month ended): run billing close "
                f"--period {period} to bill the whole month"
            )


def check_snapshot_covers_month(run: BillingRun, period: BillingPeriod, *, draft: bool) -> None:
    """A re-rate that finalizes prices a snapshot fetched after its month ended."""
    if not draft and run.started_at < period.end:
        raise PeriodError(
            f"the usage snapshot of {period} (run {run.id}) was fetched on "
            f"{run.started_at:%Y-%m-%d %H:%M} UTC, before the month ended: run billing close "
            f"--period {period} to fetch the whole month, or rerate with --draft"
        )


def check_locale(locale: str, pricing: Pricing | None = None) -> None:
    """BILLING_LOCALE is a locale Babel knows and writes every currency of the cards in."""
    try:
        Locale.parse(locale)
    except (UnknownLocaleError, ValueError, TypeError):
        raise ConfigError(
            f"setting BILLING_LOCALE: {locale!r} is not a locale Babel knows; "
            "use one like en_US, de_DE or ja_JP"
        ) from None
    currencies = {card.currency for card in pricing.catalog.cards} if pricing else {"USD"}
    for currency in sorted(currencies):
        try:
            formatting.money(Decimal("1234.56"), currency, locale)
        except (ValueError, LookupError) as error:
            raise ConfigError(
                f"setting BILLING_LOCALE: {locale!r} cannot write amounts in {currency} "
                f"({error}); use another locale"
            ) from None


def check_templates(templates_dir: Path | None) -> None:
    """BILLING_TEMPLATES_DIR is a folder, and every template (overridden or shipped) loads."""
    if templates_dir is not None and not templates_dir.is_dir():
        raise ConfigError(
            f"setting BILLING_TEMPLATES_DIR: {str(templates_dir)!r} is not a folder; "
            "point it at a folder of template overrides or unset it"
        )
    environment = template_environment(templates_dir, "en_US")
    for name in TEMPLATES:
        try:
            environment.get_template(name)
        except TemplateNotFound:
            raise ConfigError(
                f"template {name} is missing from the shipped templates: reinstall billing"
            ) from None
        except TemplateSyntaxError as error:
            raise ConfigError(
                f"template {error.filename or name}:{error.lineno}: {error.message}; "
                "fix it or remove the override from BILLING_TEMPLATES_DIR"
            ) from None
        except (TemplateError, OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"template {name} cannot be loaded ({error}); check BILLING_TEMPLATES_DIR"
            ) from None


def check_email_settings(settings: Settings) -> None:
    """The sender parses and an SMTP backend has a usable URL."""
    try:
        parse_mailbox(settings.email_from)
    except ValueError as error:
        raise ConfigError(
            f"setting BILLING_EMAIL_FROM: {settings.email_from!r} is not an address like "
            f"Billing <billing@example.com>: {error}"
        ) from None
    if settings.email_backend == "smtp":
        if settings.smtp_url is None:
            raise ConfigError(
                "setting BILLING_EMAIL_BACKEND: smtp needs BILLING_SMTP_URL "
                "(e.g. smtp://user:password@host:587)"
            )
        parse_smtp_url(settings.smtp_url.get_secret_value(), "BILLING_SMTP_URL")


def check_webhook_endpoints(settings: Settings) -> None:
    """BILLING_WEBHOOKS, when set, is a valid endpoints file whose every secret is found; a
    problem is `file:line: field: message`."""
    if settings.webhooks is not None:
        load_webhooks(settings.webhooks)


def check_output_folder(output_dir: Path, period: BillingPeriod) -> None:
    """The period's folder (or, before it exists, its nearest existing parent) is a folder this
    process can write in: proved with a temporary file, removed at once."""
    target = output_dir / str(period)
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    todo = "point BILLING_OUTPUT_DIR at a folder you can write in"
    if not existing.is_dir():
        raise ConfigError(
            f"setting BILLING_OUTPUT_DIR: cannot write {target}: {existing} is a file, "
            f"not a folder; {todo}"
        )
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".billing-preflight-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"setting BILLING_OUTPUT_DIR: cannot write in {existing} "
            f"({error.strerror or error}); {todo}"
        ) from None


def check_api_key(settings: Settings) -> None:
    """MKA1_API_KEY is set and not blank: said before the API is called."""
    key = settings.mka1_api_key
    if key is None or not key.get_secret_value().strip():
        state = "not set" if key is None else "empty"
        raise ConfigError(
            f"setting MKA1_API_KEY is {state}: set it to an admin key with the all_orgs "
            "scope (nothing was fetched)"
        )


def check_database(settings: Settings) -> None:
    """The URL is one this service can use; with BILLING_AUTO_MIGRATE off, the database must
    already be at the newest schema (with it on, the run migrates it)."""
    parse_database_url(settings.database_url)
    if settings.auto_migrate:
        return
    try:
        with existing_ledger(settings):
            pass
    except LedgerMissing as missing:
        raise StorageError(f"{missing} (BILLING_AUTO_MIGRATE is off)") from None


def check_orgs_known(settings: Settings, pricing: Pricing, org_ids: Sequence[str]) -> None:
    """Each org asked for by id is in the org directory or has an invoice in the ledger: a
    mistyped id is refused by name instead of closing nothing and re-rendering everything."""
    unlisted = [org for org in dict.fromkeys(org_ids) if org not in pricing.directory.orgs]
    if not unlisted:
        return
    unknown = set(unlisted) - invoiced_orgs(settings, unlisted)
    if unknown:
        first = next(org for org in unlisted if org in unknown)
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConfigError(
            f"--org {first!r}{more}: no such org in the org directory {settings.orgs} and no "
            "invoice of it in the ledger; check the id (billing invoices list shows billed "
            "orgs) or add the org to BILLING_ORGS"
        )


def invoiced_orgs(settings: Settings, org_ids: Sequence[str]) -> set[str]:
    """Which of these orgs have an invoice of any period in the ledger (none: no ledger yet)."""
    try:
        with (
            existing_ledger(settings, newest_only=False) as engine,
            Session(engine) as session,
        ):
            found = session.execute(
                select(col(Invoice.org_id)).where(col(Invoice.org_id).in_(list(org_ids))).distinct()
            ).scalars()
            return set(found)
    except LedgerMissing:
        return set()
