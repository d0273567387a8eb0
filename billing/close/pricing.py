"""Pricing of one period: the rate cards and org directory, cross-checked, and the fetch
they need."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from billing.catalog import (
    OrgDirectory,
    RateCatalog,
    check_directory_against_catalog,
    load_org_directory,
    load_rate_cards,
)
from billing.catalog.loader import card_for_account
from billing.config import Settings
from billing.domain import OrgAccount, RateCard, RatedInvoice
from billing.periods import BillingPeriod
from billing.usage.client import UsageQuery


@dataclass(frozen=True)
class Pricing:
    """The rate cards and org directory, validated together for one period."""

    catalog: RateCatalog
    directory: OrgDirectory
    period: BillingPeriod

    def account_for(self, org_id: str) -> OrgAccount:
        return self.directory.account_for(org_id)

    def card_for(self, account: OrgAccount) -> RateCard:
        return card_for_account(self.catalog, self.directory, account, self.period)

    def empty_invoice(self, org_id: str) -> RatedInvoice:
        """An invoice with no usage charges, to carry corrections for an org idle this period."""
        account = self.account_for(org_id)
        card = self.card_for(account)
        return RatedInvoice(org=account, currency=card.currency, rate_card=card, charges=())

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
    return Pricing(catalog, directory, period)
