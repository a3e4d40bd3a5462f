"""Domain errors of the pricing engine. None of them is raised on the pricing hot path."""

from __future__ import annotations

__all__ = ["CatalogError", "InvalidUsageError", "PricingError", "UnknownModelError"]


class PricingError(ValueError):
    """Base class of the pricing engine's errors."""


class InvalidUsageError(PricingError):
    """A usage count is negative, fractional, absurd or inconsistent."""


class UnknownModelError(PricingError):
    """A model id matches nothing in the catalog (raised by lookups, never by ``price_call``)."""

    def __init__(self, model: str, suggestions: tuple[str, ...] = ()) -> None:
        self.model = model
        self.suggestions = suggestions
        hint = f"; closest known ids: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(f"unknown model {model!r}{hint}")


class CatalogError(PricingError):
    """A catalog file is malformed; the message names the file, line and field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))
