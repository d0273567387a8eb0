"""The one settings object, read from the environment (and .env) through get_settings()."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from billing.addresses import parse_mailbox, parse_smtp_url, plain_address_problem
from billing.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_ROOT / "examples"

EmailBackendName = Literal["file", "console", "none", "smtp"]
GroupByExtra = Literal["session_kind", "operation", "provider"]
# How a statement PDF breaks its charges down (billing/statements/breakdown.py): every stored
# line, subtotals per API key, or lines up to BILLING_STATEMENT_DETAIL_MAX_LINES then keys.
StatementDetail = Literal["lines", "keys", "auto"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Every setting of the service; names are public contracts."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    mka1_base_url: str = Field("https://apigw.mka1.com", validation_alias=_env("MKA1_BASE_URL"))
    mka1_api_key: SecretStr | None = Field(None, validation_alias=_env("MKA1_API_KEY"))
    mka1_on_behalf_of: str | None = Field(None, validation_alias=_env("MKA1_ON_BEHALF_OF"))
    mka1_timeout_seconds: float = Field(30.0, gt=0, validation_alias=_env("MKA1_TIMEOUT_SECONDS"))
    mka1_max_attempts: int = Field(5, ge=1, validation_alias=_env("MKA1_MAX_ATTEMPTS"))
    mka1_page_deadline_seconds: float = Field(
        120.0, gt=0, validation_alias=_env("MKA1_PAGE_DEADLINE_SECONDS")
    )
    mka1_bucket_width: Literal["1m", "1h", "1d"] = Field(
        "1d", validation_alias=_env("MKA1_BUCKET_WIDTH")
    )
    mka1_group_by_extra: tuple[GroupByExtra, ...] = Field(
        (), validation_alias=_env("MKA1_GROUP_BY_EXTRA")
    )
    completeness_check: bool = Field(True, validation_alias=_env("BILLING_COMPLETENESS_CHECK"))

    database_url: str = Field("sqlite:///billing.db", validation_alias=_env("BILLING_DATABASE_URL"))
    rate_cards: Path = Field(EXAMPLES / "ratecards", validation_alias=_env("BILLING_RATE_CARDS"))
    orgs: Path = Field(EXAMPLES / "orgs.yaml", validation_alias=_env("BILLING_ORGS"))
    output_dir: Path = Field(Path("statements"), validation_alias=_env("BILLING_OUTPUT_DIR"))
    templates_dir: Path | None = Field(None, validation_alias=_env("BILLING_TEMPLATES_DIR"))
    email_backend: EmailBackendName = Field("file", validation_alias=_env("BILLING_EMAIL_BACKEND"))
    email_from: str = Field(
        "MKA1 Billing <billing@mka1.example>", validation_alias=_env("BILLING_EMAIL_FROM")
    )
    email_reply_to: str | None = Field(None, validation_alias=_env("BILLING_EMAIL_REPLY_TO"))
    email_bcc: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("BILLING_EMAIL_BCC")
    )
    smtp_url: SecretStr | None = Field(None, validation_alias=_env("BILLING_SMTP_URL"))
    smtp_timeout_seconds: float = Field(  # float-ok: seconds
        30.0, gt=0, validation_alias=_env("BILLING_SMTP_TIMEOUT_SECONDS")
    )
    smtp_rate_per_second: float = Field(  # float-ok: messages per second
        10.0, gt=0, validation_alias=_env("BILLING_SMTP_RATE_PER_SECOND")
    )
    smtp_max_per_connection: int = Field(
        100, ge=1, validation_alias=_env("BILLING_SMTP_MAX_PER_CONNECTION")
    )
    smtp_retry_seconds: Annotated[tuple[float, ...], NoDecode] = Field(  # float-ok: seconds
        (5.0, 20.0), validation_alias=_env("BILLING_SMTP_RETRY_SECONDS")
    )
    broker_url: str | None = Field(None, validation_alias=_env("BILLING_BROKER_URL"))
    celery_visibility_timeout_seconds: int = Field(
        4 * 3600, ge=60, validation_alias=_env("BILLING_CELERY_VISIBILITY_TIMEOUT_SECONDS")
    )
    celery_task_time_limit_seconds: int = Field(
        3600, ge=30, validation_alias=_env("BILLING_CELERY_TASK_TIME_LIMIT_SECONDS")
    )
    celery_max_deliveries: int = Field(
        5, ge=1, validation_alias=_env("BILLING_CELERY_MAX_DELIVERIES")
    )
    rate_batch_orgs: int = Field(200, ge=1, validation_alias=_env("BILLING_RATE_BATCH_ORGS"))
    # Invoices per render and per email task on the workers (each still its own unit).
    publish_batch: int = Field(20, ge=1, validation_alias=_env("BILLING_PUBLISH_BATCH"))
    close_day: int = Field(2, ge=1, le=28, validation_alias=_env("BILLING_CLOSE_DAY"))
    close_hour: int = Field(6, ge=0, le=23, validation_alias=_env("BILLING_CLOSE_HOUR"))
    close_expires_hours: int = Field(12, ge=1, validation_alias=_env("BILLING_CLOSE_EXPIRES_HOURS"))
    sweep_minutes: int = Field(5, ge=1, validation_alias=_env("BILLING_SWEEP_MINUTES"))
    # Days a scheduled (or --review) close keeps its drafts open for review before beat
    # finalizes them; 0: the close finalizes at once.
    review_days: int = Field(0, ge=0, validation_alias=_env("BILLING_REVIEW_DAYS"))
    stall_minutes: int = Field(15, ge=1, validation_alias=_env("BILLING_STALL_MINUTES"))
    locale: str = Field("en_US", validation_alias=_env("BILLING_LOCALE"))
    issuer_name: str = Field("MKA1, Inc.", validation_alias=_env("BILLING_ISSUER_NAME"))
    issuer_address: str = Field(
        "548 Market Street, San Francisco, CA 94104, USA",
        validation_alias=_env("BILLING_ISSUER_ADDRESS"),
    )
    payment_terms_days: int = Field(30, ge=0, validation_alias=_env("BILLING_PAYMENT_TERMS_DAYS"))
    # The issuer's own tax id (printed on every invoice) and ISO 3166-1 country, whose default
    # rule in BILLING_TAX_RATES applies to orgs that name none (billing/catalog/taxes.py).
    issuer_tax_id: str = Field("", validation_alias=_env("BILLING_ISSUER_TAX_ID"))
    issuer_country: str = Field("US", validation_alias=_env("BILLING_ISSUER_COUNTRY"))
    # Tax rates (YAML); unset: invoices carry no tax lines at all.
    tax_rates: Path | None = Field(None, validation_alias=_env("BILLING_TAX_RATES"))
    # How to pay, printed on invoices and in their emails: bank transfer details (lines
    # separated by "; " or newlines) and/or a payment link ({invoice_number} is filled in).
    payment_bank_details: str = Field("", validation_alias=_env("BILLING_PAYMENT_BANK_DETAILS"))
    payment_link: str = Field("", validation_alias=_env("BILLING_PAYMENT_LINK"))
    page_size: Literal["A4", "Letter"] = Field("A4", validation_alias=_env("BILLING_PAGE_SIZE"))
    statement_detail: StatementDetail = Field(
        "auto", validation_alias=_env("BILLING_STATEMENT_DETAIL")
    )
    statement_detail_max_lines: int = Field(
        50, ge=0, validation_alias=_env("BILLING_STATEMENT_DETAIL_MAX_LINES")
    )
    auto_migrate: bool = Field(True, validation_alias=_env("BILLING_AUTO_MIGRATE"))
    cost_centres: Path | None = Field(None, validation_alias=_env("BILLING_COST_CENTRES"))
    # Webhook endpoints (YAML, billing/catalog/webhooks.py); unset: events are only recorded.
    webhooks: Path | None = Field(None, validation_alias=_env("BILLING_WEBHOOKS"))
    webhook_max_attempts: int = Field(
        8, ge=1, validation_alias=_env("BILLING_WEBHOOK_MAX_ATTEMPTS")
    )
    webhook_first_retry_seconds: int = Field(
        30, ge=1, validation_alias=_env("BILLING_WEBHOOK_FIRST_RETRY_SECONDS")
    )
    webhook_timeout_seconds: float = Field(  # float-ok: seconds
        10.0, gt=0, validation_alias=_env("BILLING_WEBHOOK_TIMEOUT_SECONDS")
    )
    # Monthly budgets with alert thresholds (YAML, billing/catalog/budgets.py); unset: no
    # month-to-date check. The daily check runs at this hour (UTC) from Celery beat.
    budgets: Path | None = Field(None, validation_alias=_env("BILLING_BUDGETS"))
    budget_check_hour: int = Field(
        6, ge=0, le=23, validation_alias=_env("BILLING_BUDGET_CHECK_HOUR")
    )
    report_swing_percent: Decimal = Field(
        Decimal(50), ge=0, validation_alias=_env("BILLING_REPORT_SWING_PERCENT")
    )
    report_top_orgs: int = Field(10, ge=1, validation_alias=_env("BILLING_REPORT_TOP_ORGS"))
    # summary.pdf is an overview: WeasyPrint holds about 0.2 MiB per listed org while it lays
    # the document out, so 50 rows keep it the size of one long statement (every org is in the
    # CSVs).
    report_max_org_rows: int = Field(50, ge=1, validation_alias=_env("BILLING_REPORT_MAX_ORG_ROWS"))
    render_processes: int = Field(0, ge=0, validation_alias=_env("BILLING_RENDER_PROCESSES"))

    @field_validator("mka1_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("MKA1_BASE_URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("mka1_group_by_extra", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cost_centres", "webhooks", "tax_rates", "budgets", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("broker_url", "mka1_on_behalf_of", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    # The SMTP and email checks raise ConfigError rather than ValueError: a pydantic
    # ValidationError prints the input value, which for BILLING_SMTP_URL holds the password.
    @field_validator("smtp_url", "email_reply_to", mode="before")
    @classmethod
    def _blank_email_setting_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_smtp_url(value.get_secret_value(), "BILLING_SMTP_URL")
        return value

    @field_validator("email_reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_mailbox(value)
            except ValueError as error:
                raise ConfigError(
                    f"setting BILLING_EMAIL_REPLY_TO: {value!r} is not an address like "
                    f"billing@example.com or Billing <billing@example.com>: {error}"
                ) from None
        return value

    @field_validator("email_bcc", mode="before")
    @classmethod
    def _bcc_list(cls, value: object) -> object:
        addresses = value.split(",") if isinstance(value, str) else value
        if not isinstance(addresses, list | tuple):
            return value
        cleaned = tuple(str(address).strip() for address in addresses if str(address).strip())
        for address in cleaned:
            problem = plain_address_problem(address)
            if problem is not None:
                raise ConfigError(
                    f"setting BILLING_EMAIL_BCC: {address!r} is not a plain email address "
                    f"(name@example.com; several separated by commas): {problem}"
                )
        return cleaned

    @field_validator("smtp_retry_seconds", mode="before")
    @classmethod
    def _seconds_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _task_limit_below_visibility(self) -> Settings:
        if self.celery_task_time_limit_seconds >= self.celery_visibility_timeout_seconds:
            raise ConfigError(
                "setting BILLING_CELERY_TASK_TIME_LIMIT_SECONDS must be below "
                "BILLING_CELERY_VISIBILITY_TIMEOUT_SECONDS, or Redis hands a running task to "
                "a second worker"
            )
        return self

    @model_validator(mode="after")
    def _smtp_backend_has_a_server(self) -> Settings:
        if self.email_backend == "smtp" and self.smtp_url is None:
            raise ConfigError(
                "setting BILLING_EMAIL_BACKEND: smtp needs BILLING_SMTP_URL "
                "(e.g. smtp://user:password@host:587)"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
