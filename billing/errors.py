"""The exception tree: every expected failure is a BillingError with a one-line, actionable message.

    BillingError                    expected failure; the CLI prints it as one line and exits 1
    ├── ConfigError                 a setting, the org directory or a rate card is wrong
    │   └── RateCardError           a rate card fails validation or no version applies
    ├── PeriodError                 a period string is not YYYY-MM
    ├── UsageError                  the usage upstream failed us
    │   ├── UpstreamUnavailable     connect error, timeout, 5xx, 429 after retries  (retryable)
    │   ├── UpstreamAuthError       401/403: the API key is missing or wrong
    │   ├── UpstreamRejected        422 or another 4xx: the request was refused
    │   ├── UsageContractError      a page does not match the contract (names page and field)
    │   └── IncompleteUsage         grouped usage does not add up to the per-org totals
    ├── StorageError                the database refused a write or is behind on migrations
    │   └── LedgerMissing           a reading command found no database or no schema
    ├── PeriodBusy                  a run cannot start: another run holds the period's lock
    ├── InvoiceStateError           the invoice's state does not allow the action (void a draft)
    ├── NotFound                    no invoice, run, credit note or adjustment by that reference
    ├── AccessError                 a user, token or sign-in refused
    │   └── SignInThrottled         too many failed sign-ins: wait (it says how long)
    └── OutputError                 a statement or email could not be written

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BillingError(Exception):
    """An expected failure with a message meant for the person running the close."""

    retryable = False


class ConfigError(BillingError):
    """A setting, the org directory or a rate card is wrong."""


class RateCardError(ConfigError):
    """A rate card is invalid, or no version of it applies to the period."""


class PeriodError(BillingError):
    """A billing period could not be parsed."""


class UsageError(BillingError):
    """Fetching usage from the MKA1 API failed."""


class UpstreamUnavailable(UsageError):
    """The upstream could not be reached or kept failing; trying later may work."""

    retryable = True


class UpstreamAuthError(UsageError):
    """The upstream refused our credentials."""


class UpstreamRejected(UsageError):
    """The upstream rejected the request (422 or another 4xx)."""


class UsageContractError(UsageError):
    """A usage page does not match the upstream contract."""


class StorageError(BillingError):
    """The database could not store the close."""


class LedgerMissing(StorageError):
    """The ledger a reading command needs does not exist yet (no database, or no schema)."""


class PeriodBusy(BillingError):
    """Another process holds the period: it is being closed, finalized or re-rated."""


class InvoiceStateError(BillingError):
    """The invoice is not in a state that allows what was asked (finalized ones never change)."""


class NotFound(BillingError):
    """Nothing in the ledger goes by the reference given (an invoice, run, credit note...)."""


class OutputError(BillingError):
    """A statement, report or email file could not be written."""


class IncompleteUsage(UsageError):
    """The grouped usage does not add up to the per-org totals: nothing was billed."""


class AccessError(BillingError):
    """A user, a token or a sign-in was refused: unknown, wrong, not allowed, or slowed down."""


class SignInThrottled(AccessError):
    """Too many failed sign-ins for a name or from an address: wait before trying again."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
