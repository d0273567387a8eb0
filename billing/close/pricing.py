"""Pricing of one period: the rate cards and org directory, cross-checked, and the fetch
they need."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from billing.catalog import (
    OrgDirectory,
    RateCatalog,
    check_directory_against_catalog,
    load_org_directory,
    load_rate_cards,
)
from billing.catalog.loader import card_for_account
from billing.catalog.taxes import (
    TaxRates,
    check_period_taxes,
    load_tax_rates,
    orgs_naming_tax,
    unset_warning,
)
from billing.config import Settings
from billing.domain import OrgAccount, RateCard, RatedInvoice, TaxRule
from billing.periods import BillingPeriod
from billing.usage.client import UsageQuery

_log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class Pricing:
    """The rate cards and org directory, validated together for one period."""

    catalog: RateCatalog
    directory: OrgDirectory
    period: BillingPeriod
    taxes: TaxRates | None = None  # BILLING_TAX_RATES; None: no tax anywhere
    issuer_country: str = "US"
    # Orgs whose directory entry names a tax rule that is not applied (BILLING_TAX_RATES unset).
    ignored_tax_rules: tuple[str, ...] = ()

    def account_for(self, org_id: str) -> OrgAccount:
        return self.directory.account_for(org_id)

    def tax_rule(self, account: OrgAccount) -> TaxRule | None:
        """The org's tax rule for the period (None: untaxed), checked at load already."""
        if self.taxes is None:
            return None
        return self.taxes.rule_for(account, self.period, self.issuer_country)

    def with_tax(self, invoice: RatedInvoice) -> RatedInvoice:
        """The rated invoice with its org's tax rule for the period."""
        rule = self.tax_rule(invoice.org)
        return invoice if rule is None else dataclasses.replace(invoice, tax_rule=rule)

    def card_for(self, account: OrgAccount) -> RateCard:
        return card_for_account(self.catalog, self.directory, account, self.period)

    def empty_invoice(self, org_id: str) -> RatedInvoice:
        """An invoice with no usage charges, to carry corrections for an org idle this period."""
        account = self.account_for(org_id)
        card = self.card_for(account)
        return RatedInvoice(
            org=account,
            currency=card.currency,
            rate_card=card,
            charges=(),
            tax_rule=self.tax_rule(account),
        )

    def usage_query(
        self,
        org_ids: tuple[str, ...] = (),
        bucket_width: str = "1d",
        extra_group_by: tuple[str, ...] = (),
    ) -> UsageQuery:
        """The fetch this pricing needs: by session kind too when a card prices by kind."""
        if any(card.needs_session_kind for card in self.catalog.cards):
            extra_group_by = (*extra_group_by, "session_kind")
        query = UsageQuery.for_period(self.period, org_ids, extra_group_by)
        return dataclasses.replace(query, bucket_width=bucket_width)


def load_pricing(settings: Settings, period: BillingPeriod) -> Pricing:
    """Load and cross-check rate cards and the org directory before anything is fetched."""
    catalog = load_rate_cards(settings.rate_cards)
    directory = load_org_directory(settings.orgs)
    check_directory_against_catalog(directory, catalog, period)
    taxes = None
    ignored: tuple[str, ...] = ()
    if settings.tax_rates is not None:
        taxes = load_tax_rates(settings.tax_rates)
        check_period_taxes(taxes, directory.orgs.values(), settings.issuer_country, period)
    else:
        ignored = tuple(orgs_naming_tax(directory.orgs.values()))
    return Pricing(catalog, directory, period, taxes, settings.issuer_country, ignored)


def warn_of_ignored_tax_rules(pricing: Pricing) -> None:
    """Warn (once per process, not per batch) that orgs name tax rules while BILLING_TAX_RATES
    is unset; called once a run has passed its preflight, so that a refusal stays one line."""
    warning = unset_warning(pricing.ignored_tax_rules) if pricing.ignored_tax_rules else ""
    if warning and warning not in _warned:
        _warned.add(warning)
        _log.warning(warning)
