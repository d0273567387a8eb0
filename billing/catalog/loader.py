"""Loading rate cards and the org directory, choosing versions, applying per-org overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from billing.catalog.schema import (
    PRICING_MODEL_FIELDS,
    MeterSpec,
    OrgDirectorySpec,
    OrgSpec,
    RateCardSpec,
    price_to_spec_input,
)
from billing.catalog.yamlsource import YamlSource, read_yaml, stream_yaml_list
from billing.domain import OrgAccount, OrgTax, RateCard
from billing.errors import ConfigError, RateCardError
from billing.periods import BillingPeriod


def _card_from_source(source: YamlSource) -> tuple[RateCard | None, list[str]]:
    try:
        spec = RateCardSpec.model_validate(source.data)
    except ValidationError as error:
        return None, source.problems(error)
    card = RateCard(
        id=spec.id,
        currency=spec.currency,
        effective_from=spec.effective_from,
        effective_until=spec.effective_until,
        meters=tuple(meter.to_price() for meter in spec.meters.values()),
        minimum_charge=spec.minimum_charge,
        source=str(source.path),
        content_hash=hashlib.sha256(source.path.read_bytes()).hexdigest(),
    )
    return card, []


def load_rate_card(path: Path) -> RateCard:
    """Load and validate one rate-card file; the error names file, line and field."""
    card, problems = _card_from_source(read_yaml(path))
    if card is None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RateCardError(problems[0] + more)
    return card


@dataclass(frozen=True)
class RateCatalog:
    """Every version of every rate card, chosen by id and period."""

    cards: tuple[RateCard, ...]

    def ids(self) -> list[str]:
        return sorted({card.id for card in self.cards})

    def versions(self, card_id: str) -> list[RateCard]:
        return sorted(
            (card for card in self.cards if card.id == card_id), key=lambda c: c.effective_from
        )

    def card_for(self, card_id: str, period: BillingPeriod, org_id: str) -> RateCard:
        """The version effective at the period start; an error names the org and the card."""
        versions = self.versions(card_id)
        if not versions:
            raise RateCardError(
                f"org {org_id}: rate card {card_id!r} does not exist "
                f"(known: {', '.join(self.ids())})"
            )
        started = [card for card in versions if card.effective_from <= period.first_day]
        if not started:
            raise RateCardError(
                f"org {org_id}: no version of rate card {card_id!r} is effective on "
                f"{period.first_day} (the first starts {versions[0].effective_from})"
            )
        card = started[-1]
        if card.effective_until is not None and card.effective_until < period.first_day:
            raise RateCardError(
                f"org {org_id}: rate card {card_id!r} version {card.version} ended on "
                f"{card.effective_until} and no later version applies to {period}"
            )
        return card


def _read_cards(folder: Path) -> tuple[list[RateCard], list[str]]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: rate-card folder not found (set BILLING_RATE_CARDS)")
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not paths:
        raise ConfigError(f"{folder}: no rate-card files (*.yaml) found")
    cards: list[RateCard] = []
    problems: list[str] = []
    seen: dict[tuple[str, date], str] = {}
    for path in paths:
        try:
            card, card_problems = _card_from_source(read_yaml(path))
        except ConfigError as error:
            problems.append(str(error))
            continue
        problems.extend(card_problems)
        if card is None:
            continue
        key = (card.id, card.effective_from)
        if key in seen:
            problems.append(
                f"{path}:1: rate card {card.id!r} version {card.version} "
                f"is also defined in {seen[key]}"
            )
            continue
        seen[key] = str(path)
        cards.append(card)
    return cards, problems


def load_rate_cards(folder: Path) -> RateCatalog:
    """Load every *.yaml / *.yml card of a folder; any problem stops the load."""
    cards, problems = _read_cards(folder)
    if problems:
        more = (
            f" (and {len(problems) - 1} more; run billing ratecards check)"
            if len(problems) > 1
            else ""
        )
        raise RateCardError(problems[0] + more)
    return RateCatalog(tuple(cards))


@dataclass(frozen=True)
class OrgDirectory:
    """Who the orgs are, where their statements go and which card prices them."""

    default_rate_card: str
    orgs: dict[str, OrgAccount]
    source: YamlSource | None = None
    entry_index: dict[str, int] = dataclasses.field(default_factory=dict)

    def account_for(self, org_id: str) -> OrgAccount:
        """The listed account, or an unlisted one named by its id on the default card."""
        return self.orgs.get(org_id) or OrgAccount(org_id=org_id, name=org_id, listed=False)

    def rate_card_id(self, account: OrgAccount) -> str:
        return account.rate_card_id or self.default_rate_card

    def where(self, org_id: str, *field: str | int) -> str:
        """file:line of an org's entry (or one of its fields), for messages."""
        if self.source is None:
            return "org directory"
        index = self.entry_index.get(org_id)
        location = ("orgs", index, *field) if index is not None else ()
        return self.source.where(location)


def _account(org: OrgSpec) -> OrgAccount:
    return OrgAccount(
        org_id=org.org_id,
        name=org.name,
        emails=tuple(org.email),
        rate_card_id=org.rate_card,
        discount_percent=org.discount_percent,
        minimum_commitment=org.minimum_commitment,
        billing_address=org.address.strip(),
        overrides={
            name: override.model_dump(exclude_unset=True)
            for name, override in org.overrides.items()
        },
        country=org.country or "",
        tax_id=(org.tax_id or "").strip(),
        tax=_org_tax(org.tax),
        purchase_order=(org.purchase_order or "").strip(),
    )


def _org_tax(tax: str | dict[str, str] | None) -> OrgTax | None:
    """The directory's `tax:` (already validated) as an OrgTax."""
    if tax is None:
        return None
    if isinstance(tax, str):
        return OrgTax("reverse_charge")
    kind, value = next(iter(tax.items()))
    return OrgTax(kind, value.strip())


class _EntryCollector:
    """The entries of `orgs:` validated one by one as they are read; their problems are worded
    at the end, when the source that gives their lines exists."""

    def __init__(self) -> None:
        self.orgs: dict[str, OrgAccount] = {}
        self.entry_index: dict[str, int] = {}
        # (index, the validation error or the org_id listed twice), in entry order
        self.rejected: list[tuple[int, ValidationError | str]] = []

    def add(self, index: int, entry: Any) -> None:
        if isinstance(entry, dict) and isinstance(entry.get("org_id"), str):
            self.entry_index[entry["org_id"]] = index
        try:
            org = OrgSpec.model_validate(entry)
        except ValidationError as error:
            self.rejected.append((index, error))
            return
        if org.org_id in self.orgs:
            self.rejected.append((index, org.org_id))
            return
        self.orgs[org.org_id] = _account(org)

    def problems(self, source: YamlSource) -> list[str]:
        messages: list[str] = []
        for index, reason in self.rejected:
            if isinstance(reason, ValidationError):
                messages.extend(source.problems(reason, ("orgs", index)))
                continue
            where = source.where(("orgs", index, "org_id"))
            messages.append(f"{where}: field orgs.{index}.org_id: org {reason!r} is listed twice")
        return messages


def _read_directory(path: Path) -> tuple[OrgDirectory | None, list[str]]:
    """Validate the directory entry by entry, so one bad org does not hide the others; the
    entries are validated as they are parsed, so only one is held as raw YAML at a time."""
    entries = _EntryCollector()
    source = stream_yaml_list(path, "orgs", entries.add)
    data = source.data if isinstance(source.data, dict) else {}
    try:
        spec = OrgDirectorySpec.model_validate({**data, "orgs": []} if data else source.data)
    except ValidationError as error:
        return None, source.problems(error)
    # [] when streamed; still a list when it could not be (anchored, tagged or merged in)
    unstreamed = data.get("orgs") or []
    if not isinstance(unstreamed, list):
        return None, [f"{source.where(('orgs',))}: field orgs: must be a list of org entries"]
    for index, entry in enumerate(unstreamed):
        entries.add(index, entry)
    # Kept for messages that name a line later; the parsed data is not needed any more.
    kept = dataclasses.replace(source, data=None)
    directory = OrgDirectory(spec.default_rate_card, entries.orgs, kept, entries.entry_index)
    return directory, entries.problems(source)


def load_org_directory(path: Path) -> OrgDirectory:
    """Load and validate the org directory YAML; the error names file, line and field."""
    directory, problems = _read_directory(path)
    if directory is None or problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return directory


def apply_overrides(card: RateCard, account: OrgAccount, where: Callable[[], str]) -> RateCard:
    """The card with an org's replaced prices; a price model given replaces the card's model.
    `where` gives file:line for an error: only then, as finding lines composes the whole file."""
    if not account.overrides:
        return card
    prices = {price.name: price for price in card.meters}
    for name in account.overrides:
        if name not in prices:
            raise RateCardError(
                f"{where()}: org {account.org_id}: override of {name!r}, which rate card "
                f"{card.id!r} version {card.version} does not have"
            )
    replaced = []
    for price in card.meters:
        override = account.overrides.get(price.name)
        if override is None:
            replaced.append(price)
            continue
        base = price_to_spec_input(price)
        if any(key in override for key in PRICING_MODEL_FIELDS):
            base = {key: value for key, value in base.items() if key not in PRICING_MODEL_FIELDS}
        try:
            replaced.append(MeterSpec.model_validate({**base, **override}).to_price())
        except ValidationError as error:
            message = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise RateCardError(
                f"{where()}: org {account.org_id}: override of {price.name!r}: {message}"
            ) from None
    digest = hashlib.sha256(
        (card.content_hash + json.dumps(account.overrides, sort_keys=True, default=str)).encode()
    ).hexdigest()
    return dataclasses.replace(card, meters=tuple(replaced), content_hash=digest)


def card_for_account(
    catalog: RateCatalog, directory: OrgDirectory, account: OrgAccount, period: BillingPeriod
) -> RateCard:
    """The card version that prices an org in a period, with the org's overrides applied."""
    card = catalog.card_for(directory.rate_card_id(account), period, account.org_id)
    return apply_overrides(card, account, partial(directory.where, account.org_id, "overrides"))


def check_directory_against_catalog(
    directory: OrgDirectory, catalog: RateCatalog, period: BillingPeriod
) -> None:
    """Fail before fetching if any listed org (or the default) cannot be priced in the period."""
    catalog.card_for(directory.default_rate_card, period, "(default_rate_card)")
    for account in directory.orgs.values():
        card_for_account(catalog, directory, account, period)


def check_catalog(cards_folder: Path, orgs_file: Path) -> list[str]:
    """Every problem of every card and of the org directory, each naming file, line and field."""
    cards, problems = _read_cards(cards_folder)
    catalog = RateCatalog(tuple(cards))
    try:
        directory, directory_problems = _read_directory(orgs_file)
    except ConfigError as error:
        return [*problems, str(error)]
    problems.extend(directory_problems)
    if directory is None:
        return problems
    known = set(catalog.ids())
    if directory.default_rate_card not in known and cards:
        where = directory.source.where(("default_rate_card",)) if directory.source else ""
        problems.append(
            f"{where}: field default_rate_card: rate card {directory.default_rate_card!r} "
            "does not exist"
        )
    for account in directory.orgs.values():
        card_id = directory.rate_card_id(account)
        if card_id not in known:
            if account.rate_card_id is not None:
                problems.append(
                    f"{directory.where(account.org_id, 'rate_card')}: field rate_card: "
                    f"org {account.org_id} points to rate card {card_id!r}, which does not exist"
                )
            continue
        for version in catalog.versions(card_id):
            try:
                apply_overrides(
                    version, account, partial(directory.where, account.org_id, "overrides")
                )
            except RateCardError as error:
                problems.append(str(error))
    return problems
