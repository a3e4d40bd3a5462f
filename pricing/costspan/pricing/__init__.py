"""costspan.pricing: what an LLM call (or a compute resource) costs, exactly, in Decimal.

Pure Python: no OpenTelemetry, nothing from the other costspan slices.
"""

from costspan.pricing._catalog import USER_CATALOG_ENV, Catalog, load_catalog, parse_catalog_text
from costspan.pricing._engine import PriceBreakdown, Pricer, ResourceCost, TenantOverride, default_pricer
from costspan.pricing._errors import CatalogError, InvalidUsageError, PricingError, UnknownModelError
from costspan.pricing._max_output import MaxOutput, MaxOutputTable, max_output_table
from costspan.pricing._schema import SERVICE_TIERS, PriceSet
from costspan.pricing._usage import MAX_COUNT, Usage

__all__ = [
    "MAX_COUNT",
    "SERVICE_TIERS",
    "USER_CATALOG_ENV",
    "Catalog",
    "CatalogError",
    "InvalidUsageError",
    "MaxOutput",
    "MaxOutputTable",
    "PriceBreakdown",
    "PriceSet",
    "Pricer",
    "PricingError",
    "ResourceCost",
    "TenantOverride",
    "UnknownModelError",
    "Usage",
    "default_pricer",
    "load_catalog",
    "max_output_table",
    "parse_catalog_text",
]
