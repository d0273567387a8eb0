"""FOCUS 1.2 column definitions as data, for the project's own conformance check.

Source: the FinOps Foundation's FOCUS_Spec repository, tag v1.2, one file per column under
`specification/columns/` (SOURCE_PATHS below; ProviderName is `provider.md`, PublisherName
`publisher.md`, InvoiceIssuerName `invoiceissuer.md`), and the attributes under
`specification/attributes/` (numeric_format.md, datetime_format.md, currency_format.md,
null_handling.md, string_handling.md, column_handling.md). Written down per column from the
normative requirements, not copied: feature level, data type, value format, allowed values,
nullability, and the condition of a conditional column. The per-ChargeCategory nullability
rules are in NULL_ON_TAX_REQUIRED_ON_USAGE and the pairs below.
"""

from __future__ import annotations

from dataclasses import dataclass

FOCUS_VERSION = "1.2"
SPEC_REPOSITORY = "FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec"
SPEC_TAG = "v1.2"

MANDATORY = "Mandatory"
RECOMMENDED = "Recommended"
CONDITIONAL = "Conditional"

STRING = "String"
DECIMAL = "Decimal"
DATETIME = "Date/Time"
JSON = "JSON"  # KeyValueFormat: a serialized JSON object

# Value formats (attributes): how a non-null cell must be written.
STRING_HANDLING = "StringHandling"
NUMERIC = "NumericFormat"
DATETIME_FORMAT = "DateTimeFormat"
CURRENCY = "CurrencyFormat"
UNIT = "UnitFormat"  # a SHOULD in 1.2: not enforced
ALLOWED = "AllowedValues"
KEY_VALUE = "KeyValueFormat"


@dataclass(frozen=True)
class FocusColumn:
    """One FOCUS 1.2 column: `nullable` False means never null in any row (for us: see
    `condition`); rows' conditional nullability is in the rules below."""

    column_id: str
    feature_level: str
    data_type: str
    value_format: str
    nullable: bool
    allowed_values: tuple[str, ...] = ()
    condition: str = ""  # when a Conditional (or Recommended) column must (should) be present
    source: str = ""

    @property
    def path(self) -> str:
        return f"specification/columns/{self.source or self.column_id.lower() + '.md'}"


CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
CHARGE_FREQUENCIES = ("One-Time", "Recurring", "Usage-Based")
PRICING_CATEGORIES = ("Standard", "Dynamic", "Committed", "Other")
SERVICE_CATEGORIES = (
    "AI and Machine Learning",
    "Analytics",
    "Business Applications",
    "Compute",
    "Databases",
    "Developer Tools",
    "Multicloud",
    "Identity",
    "Integration",
    "Internet of Things",
    "Management and Governance",
    "Media",
    "Migration",
    "Mobile",
    "Networking",
    "Security",
    "Storage",
    "Web",
    "Other",
)

_C = FocusColumn
COLUMNS: tuple[FocusColumn, ...] = (
    _C("AvailabilityZone", RECOMMENDED, STRING, STRING_HANDLING, True,
       condition="the provider deploys resources or services within availability zones"),
    _C("BilledCost", MANDATORY, DECIMAL, NUMERIC, False),
    _C("BillingAccountId", MANDATORY, STRING, STRING_HANDLING, False),
    # MUST NOT be null when the provider supports display names of billing accounts: we do.
    _C("BillingAccountName", MANDATORY, STRING, STRING_HANDLING, False),
    _C("BillingAccountType", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider has more than one billing account type"),
    _C("BillingCurrency", MANDATORY, STRING, CURRENCY, False),
    _C("BillingPeriodEnd", MANDATORY, DATETIME, DATETIME_FORMAT, False),
    _C("BillingPeriodStart", MANDATORY, DATETIME, DATETIME_FORMAT, False),
    _C("CapacityReservationId", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider supports capacity reservations"),
    _C("CapacityReservationStatus", CONDITIONAL, STRING, ALLOWED, True, ("Used", "Unused"),
       condition="the provider supports capacity reservations"),
    _C("ChargeCategory", MANDATORY, STRING, ALLOWED, False, CHARGE_CATEGORIES),
    # null unless the row corrects a previously invoiced billing period; then "Correction"
    _C("ChargeClass", MANDATORY, STRING, ALLOWED, True, ("Correction",)),
    # SHOULD NOT be null: held to never null here
    _C("ChargeDescription", MANDATORY, STRING, STRING_HANDLING, False),
    _C("ChargeFrequency", RECOMMENDED, STRING, ALLOWED, False, CHARGE_FREQUENCIES),
    _C("ChargePeriodEnd", MANDATORY, DATETIME, DATETIME_FORMAT, False),
    _C("ChargePeriodStart", MANDATORY, DATETIME, DATETIME_FORMAT, False),
    _C("CommitmentDiscountCategory", CONDITIONAL, STRING, ALLOWED, True, ("Spend", "Usage"),
       condition="the provider supports commitment discounts"),
    _C("CommitmentDiscountId", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider supports commitment discounts"),
    _C("CommitmentDiscountName", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider supports commitment discounts"),
    _C("CommitmentDiscountQuantity", CONDITIONAL, DECIMAL, NUMERIC, True,
       condition="the provider supports commitment discounts"),
    _C("CommitmentDiscountStatus", CONDITIONAL, STRING, ALLOWED, True, ("Used", "Unused"),
       condition="the provider supports commitment discounts"),
    _C("CommitmentDiscountType", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider supports commitment discounts"),
    _C("CommitmentDiscountUnit", CONDITIONAL, STRING, UNIT, True,
       condition="the provider supports commitment discounts"),
    _C("ConsumedQuantity", CONDITIONAL, DECIMAL, NUMERIC, True,
       condition="the provider supports the measurement of usage"),
    _C("ConsumedUnit", CONDITIONAL, STRING, UNIT, True,
       condition="the provider supports the measurement of usage"),
    _C("ContractedCost", MANDATORY, DECIMAL, NUMERIC, False),
    _C("ContractedUnitPrice", CONDITIONAL, DECIMAL, NUMERIC, True,
       condition="the provider supports negotiated pricing concepts"),
    _C("EffectiveCost", MANDATORY, DECIMAL, NUMERIC, False),
    _C("InvoiceId", RECOMMENDED, STRING, STRING_HANDLING, True,
       condition="always recommended; null only for charges on no (provisional) invoice"),
    _C("InvoiceIssuerName", MANDATORY, STRING, STRING_HANDLING, False, source="invoiceissuer.md"),
    _C("ListCost", MANDATORY, DECIMAL, NUMERIC, False),
    _C("ListUnitPrice", CONDITIONAL, DECIMAL, NUMERIC, True,
       condition="the provider publishes unit prices exclusive of discounts"),
    _C("PricingCategory", CONDITIONAL, STRING, ALLOWED, True, PRICING_CATEGORIES,
       condition="the provider has more than one pricing category across its SKUs"),
    _C("PricingCurrency", CONDITIONAL, STRING, CURRENCY, False,
       condition="the provider prices and bills in different currencies"),
    _C("PricingCurrencyContractedUnitPrice", CONDITIONAL, DECIMAL, NUMERIC, True,
       condition="prices in a virtual currency (recommended: other pricing currencies)"),
    _C("PricingCurrencyEffectiveCost", CONDITIONAL, DECIMAL, NUMERIC, False,
       condition="prices in a virtual currency (recommended: other pricing currencies)"),
    _C("PricingCurrencyListUnitPrice", CONDITIONAL, DECIMAL, NUMERIC, True,
       condition="prices in a virtual currency (recommended: other pricing currencies)"),
    _C("PricingQuantity", MANDATORY, DECIMAL, NUMERIC, True),
    _C("PricingUnit", MANDATORY, STRING, UNIT, True),
    _C("ProviderName", MANDATORY, STRING, STRING_HANDLING, False, source="provider.md"),
    _C("PublisherName", MANDATORY, STRING, STRING_HANDLING, False, source="publisher.md"),
    _C("RegionId", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider deploys resources or services within a region"),
    _C("RegionName", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider deploys resources or services within a region"),
    _C("ResourceId", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider bills based on provisioned resources"),
    _C("ResourceName", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider bills based on provisioned resources"),
    _C("ResourceType", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider bills on provisioned resources and assigns them types"),
    _C("ServiceCategory", MANDATORY, STRING, ALLOWED, False, SERVICE_CATEGORIES),
    _C("ServiceName", MANDATORY, STRING, STRING_HANDLING, False),
    # allowed values (one parent ServiceCategory each) not encoded: we do not export it
    _C("ServiceSubcategory", RECOMMENDED, STRING, ALLOWED, False, condition="always recommended"),
    _C("SkuId", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="unit pricing concepts and price lists published (publicly or by contract)"),
    _C("SkuMeter", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="unit pricing concepts and price lists published (publicly or by contract)"),
    _C("SkuPriceDetails", CONDITIONAL, JSON, KEY_VALUE, True,
       condition="unit pricing concepts and price lists published (publicly or by contract)"),
    _C("SkuPriceId", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="unit pricing concepts and price lists published (publicly or by contract)"),
    _C("SubAccountId", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider supports a sub account construct"),
    _C("SubAccountName", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider supports a sub account construct"),
    _C("SubAccountType", CONDITIONAL, STRING, STRING_HANDLING, True,
       condition="the provider has more than one sub account type"),
    _C("Tags", CONDITIONAL, JSON, KEY_VALUE, True,
       condition="the provider supports user- or provider-defined tags"),
)  # fmt: skip

BY_ID = {column.column_id: column for column in COLUMNS}

# Null when ChargeCategory is "Tax"; not null when it is "Usage" or "Purchase" and ChargeClass
# is not "Correction"; may be null otherwise (pricingquantity.md, pricingcategory.md,
# listunitprice.md, contractedunitprice.md, skuid.md, skupriceid.md, pricingcurrency*.md).
NULL_ON_TAX_REQUIRED_ON_USAGE = (
    "PricingQuantity",
    "PricingCategory",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "SkuId",
    "SkuPriceId",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyListUnitPrice",
)
# (column, the column it follows): null exactly when that one is null.
NULL_WITH = (
    ("ConsumedUnit", "ConsumedQuantity"),
    ("PricingUnit", "PricingQuantity"),
    ("SubAccountName", "SubAccountId"),
    ("SubAccountType", "SubAccountId"),
    ("BillingAccountType", "BillingAccountId"),
    ("RegionName", "RegionId"),
    ("ResourceType", "ResourceId"),
    ("CommitmentDiscountCategory", "CommitmentDiscountId"),
    ("CommitmentDiscountType", "CommitmentDiscountId"),
    ("CommitmentDiscountUnit", "CommitmentDiscountQuantity"),
)
# Costs that must equal BilledCost on a row unrelated to other charges (ChargeCategory
# "Credit") when the unit price column is absent or null (listcost.md, contractedcost.md,
# effectivecost.md).
EQUAL_TO_BILLED_ON_CREDIT = ("EffectiveCost", "ListCost", "ContractedCost")

# Our answer to each Conditional column's condition (docs/FOCUS.md says why): True when it
# applies, so the column must be in our files.
CONDITIONS_MET = {
    "ConsumedQuantity": True,  # usage is metered
    "ConsumedUnit": True,
    "SubAccountId": True,  # API keys group an org's usage
    "SubAccountName": True,
    "BillingAccountType": False,  # one kind: an org
    "SubAccountType": False,  # one kind: an API key
    "CapacityReservationId": False,
    "CapacityReservationStatus": False,
    "CommitmentDiscountCategory": False,
    "CommitmentDiscountId": False,
    "CommitmentDiscountName": False,
    "CommitmentDiscountQuantity": False,
    "CommitmentDiscountStatus": False,
    "CommitmentDiscountType": False,
    "CommitmentDiscountUnit": False,
    "ContractedUnitPrice": False,  # an org discount is a percentage of the charge, no unit price
    "ListUnitPrice": False,  # rate cards are tiered/packaged/included: see docs/FOCUS.md
    "PricingCategory": False,  # one category (Standard); exported all the same
    "PricingCurrency": False,  # priced and billed in the rate card's currency
    "PricingCurrencyContractedUnitPrice": False,
    "PricingCurrencyEffectiveCost": False,
    "PricingCurrencyListUnitPrice": False,
    "RegionId": False,
    "RegionName": False,
    "ResourceId": False,  # billed on metered usage, not on provisioned resources
    "ResourceName": False,
    "ResourceType": False,
    "SkuId": False,  # no published SKU price list: see docs/FOCUS.md
    "SkuMeter": False,
    "SkuPriceDetails": False,
    "SkuPriceId": False,
    "Tags": False,
}


def required_columns() -> tuple[str, ...]:
    """The columns our files must carry: every Mandatory one and each Conditional one whose
    condition applies to us."""
    return tuple(
        column.column_id
        for column in COLUMNS
        if column.feature_level == MANDATORY or CONDITIONS_MET.get(column.column_id, False)
    )
