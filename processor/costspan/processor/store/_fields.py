"""The edge's rules for identifiers and token counts (:mod:`._validate`) as pydantic field types.

JSON request bodies use them (the usage API's calls, the budget check and settle bodies), so a
request is checked by the same rules as a span, and the OpenAPI document states each limit.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from costspan.processor.store._validate import (
    CONTROL_FREE_PATTERN,
    MAX_ID_LENGTH,
    MAX_TOKENS,
    TENANT_PATTERN,
    check_tenant,
)

__all__ = ["Identifier", "Name", "TenantId", "TokenCount"]


def _tenant_id(value: str) -> str:
    """The rules the pattern cannot say ('.', '..', the reserved names); one argument, as pydantic calls it."""
    return check_tenant(value)


#: An identifier a request names (user, workflow, project, session, service, ...): the edge's rules
#: (store/_validate.py) as a schema, so the OpenAPI document shows them.
Identifier = Annotated[
    str,
    Field(
        max_length=MAX_ID_LENGTH,
        pattern=CONTROL_FREE_PATTERN,
        description=f"an identifier: at most {MAX_ID_LENGTH} characters, no control characters",
    ),
]
#: :data:`Identifier` that may not be empty (a model, a provider).
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=CONTROL_FREE_PATTERN,
        description=f"a name: 1 to {MAX_ID_LENGTH} characters, no control characters",
    ),
]
#: A tenant id: an identifier with no ``/`` or ``\``, and not ``.`` or ``..``.
TenantId = Annotated[
    str,
    Field(
        max_length=MAX_ID_LENGTH,
        pattern=TENANT_PATTERN,
        description=f"a tenant id: at most {MAX_ID_LENGTH} characters, no control characters, '/' or '\\'",
    ),
    AfterValidator(_tenant_id),
]
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS, description=f"a token count, 0 to {MAX_TOKENS}")]
