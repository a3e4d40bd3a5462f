"""HTTP routes of spend leases: ``POST /v1/leases`` (a shard asks a budget's owner) and ``GET /v1/leases``.

Both are for peers (their key is an admin key, ``peer_key``): tenant, ingest and metrics keys get
403. :func:`http_owner_client` is the shard's side of the same route.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._leases import Grant, LeaseBook
from costspan.processor.budgets._lessee import (
    LeaseAsk,
    LeaseUnavailableError,
    Lessee,
    OwnerClient,
    OwnerUnreachableError,
    budget_owner_key,
    leased,
    local_grant,
)
from costspan.processor.budgets._model import money

__all__ = ["LEASE_PATH", "LeaseRequest", "http_owner_client", "lease_router"]

LEASE_PATH = "/v1/leases"
_MAX = Decimal(10) ** 15


class LeaseRequest(BaseModel):
    """A shard's ask: its spend so far in the period and the lease it holds (if any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    key: str = Field(min_length=1, max_length=2048, description="the counter: the budget id, or id|tenant")
    start: float = Field(description="start of the counter's period (epoch seconds)")
    shard: str = Field(min_length=1, max_length=512, description="the asking instance's base URL")
    spent: Decimal = Field(ge=0, le=_MAX, allow_inf_nan=False)
    holding: Decimal | None = Field(default=None, ge=0, le=_MAX, allow_inf_nan=False)
    holding_ttl: float = Field(default=0.0, ge=0, le=3600)
    release: bool = False

    @field_validator("start")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("start must be a finite number of epoch seconds")
        return value


def _answer(grant: Grant) -> dict[str, Any]:
    return {
        "allowance": money(grant.allowance),
        "granted": money(grant.granted),
        "remaining": money(grant.remaining),
        "ttl": grant.ttl,
    }


def lease_router(
    book: BudgetBook,
    owner_book: LeaseBook,
    *,
    owner_of: Callable[[str], str],
    is_self: Callable[[str], bool],
    lessee: Lessee | None,
    dependencies: Sequence[Any] = (),
) -> APIRouter:
    """The lease routes over this instance's budgets; ``dependencies`` guard both (admin keys)."""
    router = APIRouter(dependencies=list(dependencies), tags=["budgets"])

    @router.post(LEASE_PATH, summary="Renew a spend lease on a budget (peers only)")
    def renew(req: LeaseRequest) -> dict[str, Any]:
        budget = book.get_budget(req.budget_id)
        if budget is None:
            raise HTTPException(404, f"unknown budget {req.budget_id!r} on this instance (define it on every peer)")
        if not leased(budget):
            raise HTTPException(409, f"budget {budget.id!r} is not leased (it is soft or per request)")
        if req.key != budget.id and not req.key.startswith(budget.id + "|"):
            raise HTTPException(400, f"counter {req.key!r} is not a counter of budget {budget.id!r}")
        owner = owner_of(budget_owner_key(budget.id))
        if not is_self(owner):
            raise HTTPException(409, f"this instance does not own budget {budget.id!r}; its owner is {owner}")
        ask = LeaseAsk(budget.id, req.key, req.start, req.shard, req.spent, req.holding, req.holding_ttl, req.release)
        return _answer(local_grant(owner_book, budget, ask))

    @router.get(LEASE_PATH, summary="Spend leases this instance holds and the unspent leases it granted")
    def show() -> dict[str, Any]:
        return {
            "held": lessee.held() if lessee is not None else {},
            "granted_outstanding": {k: money(v) for k, v in sorted(owner_book.outstanding().items())},
        }

    return router


def http_owner_client(peer_key: str | None, timeout: float) -> tuple[OwnerClient, Callable[[], None]]:
    """Ask an owner over HTTP with ``peer_key``; returns the client and its ``close``."""
    # the peer key goes to the configured owner only: no proxy from the environment, no redirect
    headers = {"x-api-key": peer_key} if peer_key else {}
    client = httpx.Client(timeout=timeout, headers=headers, trust_env=False, follow_redirects=False)

    def ask(owner_url: str, lease: LeaseAsk) -> Grant:
        body = {
            "budget_id": lease.budget_id,
            "key": lease.key,
            "start": lease.start,
            "shard": lease.shard,
            "spent": str(lease.spent),
            "holding": None if lease.holding is None else str(lease.holding),
            "holding_ttl": round(lease.holding_ttl, 3),
            "release": lease.release,
        }
        try:
            response = client.post(owner_url + LEASE_PATH, json=body)
        except httpx.HTTPError as exc:
            raise OwnerUnreachableError(f"{type(exc).__name__}: {exc or 'no answer'}") from None
        except RuntimeError:  # the client was closed: the server is stopping (a late round of the thread)
            raise LeaseUnavailableError("this instance is stopping") from None
        if response.status_code != 200:
            try:
                detail = str(response.json().get("detail", ""))[:200]
            except ValueError:
                detail = ""
            raise LeaseUnavailableError(f"answered {response.status_code} {detail}".rstrip())
        try:
            data = response.json()
            return Grant(
                Decimal(data["allowance"]), Decimal(data["granted"]), Decimal(data["remaining"]), float(data["ttl"])
            )
        except (ValueError, KeyError, ArithmeticError, TypeError):
            raise LeaseUnavailableError("answered with a body that is not a lease") from None

    return ask, client.close
