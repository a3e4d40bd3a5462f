"""A request body the JSON routes cannot even describe back: NaN or Infinity, which JSON does not have.

Python's JSON reader takes a bare ``NaN`` or ``Infinity``; when such a value fails a field's rules,
FastAPI's 422 answer would echo it and cannot be written as JSON (a 500). This handler answers 400
with one line naming the field instead (:func:`non_finite_message`); every other validation error is a 422.
"""

from __future__ import annotations

import json
import math

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError

__all__ = ["non_finite_message"]


def _non_finite_field(errors: list[dict[str, object]]) -> str | None:
    """The field holding a non-finite number, or ``"body"`` when it is elsewhere; None if there is none."""
    try:
        json.dumps(jsonable_encoder(errors), allow_nan=False)
    except ValueError:
        for error in errors:
            value = error.get("input")
            loc = error.get("loc")
            if isinstance(value, float) and not math.isfinite(value) and isinstance(loc, tuple):
                return ".".join(str(part) for part in loc[1:]) or "body"
        return "body"
    return None


def non_finite_message(exc: RequestValidationError) -> str | None:
    """The one-line 400 message when ``exc`` is about a NaN or Infinity in the body; None otherwise."""
    field = _non_finite_field(list(exc.errors()))
    if field is None:
        return None
    return f"{field}: NaN and Infinity are not numbers JSON allows; send a finite number"
