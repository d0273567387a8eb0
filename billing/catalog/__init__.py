"""Rate cards and the org directory: YAML files validated with pydantic into domain objects."""

from billing.catalog.loader import (
    OrgDirectory,
    RateCatalog,
    check_catalog,
    check_directory_against_catalog,
    load_org_directory,
    load_rate_card,
    load_rate_cards,
)

__all__ = [
    "OrgDirectory",
    "RateCatalog",
    "check_catalog",
    "check_directory_against_catalog",
    "load_org_directory",
    "load_rate_card",
    "load_rate_cards",
]
