"""The most output tokens a model can produce in one call, for models the catalog has no figure for.

The catalog's own ``max_output_tokens`` wins; this table (``data/max_output.json``) covers model
families by name prefix, with a documented default for a model no family matches. A budget check
reserves this many output tokens when a call sets no ``max_tokens``: the call's worst case.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Final, NamedTuple

__all__ = ["MaxOutput", "MaxOutputTable", "max_output_table"]

_DATA: Final = "data/max_output.json"


class MaxOutput(NamedTuple):
    tokens: int
    #: ``family`` (a family in the table matched) or ``default`` (none did)
    source: str


class MaxOutputTable:
    """Family prefix → max output tokens, and the default; looked up by the longest matching prefix."""

    __slots__ = ("default", "families")

    def __init__(self, families: dict[str, int], default: int) -> None:
        if default <= 0 or any(not isinstance(v, int) or v <= 0 for v in families.values()):
            raise ValueError("max output tokens must be positive integers")
        self.families = {k.lower(): v for k, v in families.items()}
        self.default = default

    def lookup(self, model: str) -> MaxOutput:
        name = model.lower().rsplit("/", 1)[-1].rsplit(":", 1)[0] if "/" in model else model.lower()
        candidates = [name]
        if "." in name:  # bedrock-style ids: us.anthropic.claude-sonnet-4-5-20250929-v1:0
            parts = name.split(".")
            candidates += [".".join(parts[i:]) for i in range(1, len(parts))]
        best = ""
        for candidate in candidates:
            for prefix in self.families:
                if candidate.startswith(prefix) and len(prefix) > len(best):
                    best = prefix
        if best:
            return MaxOutput(self.families[best], "family")
        return MaxOutput(self.default, "default")


@functools.cache
def max_output_table() -> MaxOutputTable:
    """The shipped table (read once)."""
    raw = json.loads(resources.files("costspan.pricing").joinpath(_DATA).read_text(encoding="utf-8"))
    return MaxOutputTable({str(k): int(v) for k, v in raw["families"].items()}, int(raw["default"]))
