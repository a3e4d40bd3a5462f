"""HTTP routes for budgets: the pre-call check, CRUD, status, audit, alerts, and the seed's routes.

``budget_router(book)`` returns an ``APIRouter``; the server app mounts it with its access rules
(:class:`BudgetAccess`: who may send, read a workspace's budget, or manage), each declared on the
routes it guards. Domain errors become HTTP errors here and nowhere else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from costspan.processor.budgets._alerts import WebhookNotifier
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._model import (
    DEFAULT_THRESHOLDS,
    Block,
    Budget,
    Call,
    InvalidBudgetError,
    Mode,
    Period,
    Unit,
    money,
    parse_budget,
)
from costspan.processor.budgets._requests import CheckRequest, SeedBudget, SettleRequest
from costspan.processor.budgets._status import BudgetStatus
from costspan.processor.budgets._workspace_ids import SEED_NAMES, SeedBudgets

__all__ = ["BudgetAccess", "Caller", "bound_tenant", "budget_router", "error_json", "may_see_spend"]

ACTOR_HEADER = "X-Costspan-Actor"
CHECK_PATH = "/v1/budgets/check"


_json_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _json(value: Any) -> bytes:
    return _json_encode(value).encode()


def error_json(detail: str) -> bytes:
    """An error body in the shape every route answers (``success``, ``detail``, ``error``)."""
    return _json({"success": False, "detail": detail, "error": detail})


def explain_request(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


@runtime_checkable
class Caller(Protocol):
    """Who calls a budget route, as the access rule that admitted it returns it (an API key's principal).

    ``role`` ``admin`` reads every budget; any other role with a ``tenant`` is bound to that tenant
    (``""``: bound to none).
    """

    @property
    def role(self) -> str: ...

    @property
    def tenant(self) -> str: ...


def bound_tenant(caller: object) -> str | None:
    """The tenant a caller is bound to (None: an admin, an unbound key, or no access rule at all)."""
    if isinstance(caller, Caller) and caller.role != "admin" and caller.tenant:
        return caller.tenant
    return None


def may_see_spend(caller: object, block: Block) -> bool:
    """A refusal's limit, spent and reserved are shown to admins (and callers without an access rule)
    and to keys bound to the refusing budget's tenant; never to another tenant's or an unbound key."""
    if not isinstance(caller, Caller) or caller.role == "admin":
        return True
    return bool(caller.tenant) and block.scope.get("tenant") == caller.tenant


def check_answer(
    book: BudgetBook, body: bytes, *, show_spend: bool = True, caller: object = None
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """``POST /v1/budgets/check`` whole: (status, JSON body, extra headers) for a request body.

    200 with the reservation, 429 (``budget_exceeded``, ``Retry-After``), 403 (a tenant-bound
    ``caller`` naming another tenant) or 422 with ``detail``, the bytes FastAPI's ``JSONResponse``
    would write. A bound caller's check without a tenant is made for its tenant.
    """
    try:
        req = CheckRequest.model_validate_json(body)
    except ValidationError as exc:
        return 422, error_json(explain_request(exc)), []
    bound = bound_tenant(caller)
    tenant = req.tenant
    if bound is not None:
        if tenant is not None and tenant != bound:
            return 403, error_json("this key may only check budgets for its own tenant"), []
        tenant = bound
    decision = book.check(
        Call(
            tenant,
            req.service,
            req.workflow,
            req.user,
            req.project,
            req.provider,
            req.model,
            req.input_tokens,
            req.max_tokens,
        )
    )
    if decision.block is None:
        answer = {
            "allowed": True,
            "reservation_id": decision.reservation_id,
            "estimate_usd": None if decision.estimate_usd is None else money(decision.estimate_usd),
            "model": decision.model,
            "max_tokens": decision.max_tokens,
            "reason": decision.reason,
        }
        return 200, _json(answer), []
    block = decision.block
    visible = show_spend and may_see_spend(caller, block)
    payload: dict[str, Any] = {
        "type": "budget_exceeded",
        "message": block.message(show_spend=visible),
        "budget_id": block.budget_id,
        "scope": dict(block.scope),
        "mode": block.mode.value,
        "unit": block.unit.value,
        "period": block.period.value,
        "resets_at": block.resets_at.isoformat() if block.resets_at else None,
        "reason": "exhausted" if block.exhausted else "estimate_exceeds_room",
        "estimate": _estimate_json(block),
        "advice": block.advice(),
    }
    if visible:
        payload.update(limit=str(block.limit), spent=money(block.spent), reserved=money(block.reserved))
    retry = block.retry_after(book.now())
    return 429, _json(payload), [("retry-after", str(retry))] if retry is not None else []


def _estimate_json(block: Block) -> dict[str, Any]:
    """This call's estimate (the caller's own figures): in the budget's unit, in USD, its tokens and how."""
    out: dict[str, Any] = {
        "requested": money(block.requested),
        "usd": None if block.estimate_usd is None else money(block.estimate_usd),
    }
    basis = block.basis
    if basis is not None:
        out.update(
            input_tokens=basis.input_tokens,
            output_tokens=basis.output_tokens,
            max_tokens=basis.max_tokens,
            output_basis=basis.source,
            how=basis.describe(),
        )
    return out


@dataclass(frozen=True, slots=True)
class BudgetAccess:
    """Who may call which budget route: FastAPI dependencies that return to allow and raise
    ``HTTPException`` to refuse (they may take the ``Request``).

    ``send`` guards what an application calls around an LLM call (check, settle, release);
    ``read_workspace`` a workspace's budget and its status (GET; it also takes the path's
    ``workspace_id``); ``manage`` every other route.
    """

    send: Callable[..., object]
    read_workspace: Callable[..., object]
    manage: Callable[..., object]


def phase17_status(row: BudgetStatus | None) -> dict[str, Any]:
    """Phase 17's budget status of a scope's monthly USD budget (the strictest that applies), numbers.

    ``remaining`` is the limit less what was spent (never below 0; reservations in flight are in the
    row's ``remaining``); ``alert_needed`` is spend at or above the budget's lowest threshold;
    ``is_over_budget`` is spend at or above the limit.
    """
    if row is None:
        return {
            "has_budget": False,
            "budget": None,
            "spent": None,
            "remaining": None,
            "usage_percent": None,
            "alert_needed": False,
            "is_over_budget": False,
            "hard_limit": False,
        }
    budget = row.budget
    percent = row.utilization * 100
    lowest = min(budget.thresholds) if budget.thresholds else 100
    return {
        "has_budget": True,
        "budget": float(budget.limit),
        "spent": float(row.spent),
        "remaining": float(max(budget.limit - row.spent, Decimal(0))),
        "usage_percent": round(float(percent), 2),
        "alert_needed": percent >= lowest,
        "is_over_budget": row.spent >= budget.limit,
        "hard_limit": budget.mode is Mode.HARD,
    }


def budget_router(
    book: BudgetBook,
    *,
    show_spend: bool = True,
    notifier: WebhookNotifier | None = None,
    access: BudgetAccess | None = None,
    dependencies: Sequence[Any] = (),
) -> APIRouter:
    """Routes over ``book``; ``show_spend=False`` leaves spend figures out of 429 answers.

    ``access``: the rules each route declares (None: every caller may call every route);
    ``dependencies`` run for every route (FastAPI's ``APIRouter(dependencies=...)``).
    """
    router = APIRouter(dependencies=list(dependencies))

    def no_caller() -> None:
        return None

    # what the send rule returns (an API key's principal) decides what a caller may settle and see
    send_rule = access.send if access is not None else no_caller
    read_workspace = [Depends(access.read_workspace)] if access is not None else []
    manage = [Depends(access.manage)] if access is not None else []

    def actor(request: Request) -> str:
        return request.headers.get(ACTOR_HEADER, "api")[:200]

    def put(spec: Budget | dict[str, Any], who: str) -> Budget:
        try:
            return book.put_budget(spec, actor=who)
        except InvalidBudgetError as exc:
            raise HTTPException(422, detail=str(exc)) from None

    # The hot routes are ``async``: a check holds the book's lock for microseconds, and a hop to
    # the thread pool would cost more than the check itself. The body is parsed by pydantic's JSON
    # parser directly (the schema is still published through ``openapi_extra``). A server that
    # mounts :class:`BudgetCheckEndpoint` answers this route before FastAPI routes it, the same way.
    @router.post(
        CHECK_PATH,
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": CheckRequest.model_json_schema()}}}},
        responses={429: {"description": "a budget has no room: `type` is `budget_exceeded`; `Retry-After` header"}},
    )
    async def check(request: Request, caller: object = Depends(send_rule)) -> Response:
        status, body, headers = check_answer(book, await request.body(), show_spend=show_spend, caller=caller)
        return Response(body, status_code=status, headers=dict(headers), media_type="application/json")

    # a reservation is bound to the tenant it was made for: a key bound to another tenant gets the
    # answer an unknown (settled, expired, never made) id gets, 404, so it learns nothing about it
    unknown: dict[int | str, dict[str, Any]] = {
        404: {"description": "no open reservation with this id (for this key's tenant)"}
    }

    @router.post("/v1/budgets/settle", responses=unknown)
    async def settle(body: SettleRequest, caller: object = Depends(send_rule)) -> JSONResponse:
        tenant = bound_tenant(caller)
        at = None if body.start_time is None else min(body.start_time, time.time())
        if not book.settle(body.reservation_id, body.cost_usd, body.tokens, body.requests, tenant=tenant, at=at):
            raise HTTPException(404, detail="no open reservation with this id")
        return JSONResponse({"settled": True})

    @router.post("/v1/budgets/reservations/{reservation_id}/release", responses=unknown)
    def release(reservation_id: str, caller: object = Depends(send_rule)) -> dict[str, bool]:
        if not book.release(reservation_id, tenant=bound_tenant(caller)):
            raise HTTPException(404, detail="no open reservation with this id")
        return {"released": True}

    @router.get("/v1/budgets", dependencies=manage)
    def list_budgets() -> list[dict[str, Any]]:
        return [b.to_json() for b in book.budgets()]

    @router.post(
        "/v1/budgets",
        status_code=201,
        dependencies=manage,
        responses={409: {"description": "a budget with this id exists (PUT /v1/budgets/{id} changes it)"}},
    )
    def create(spec: dict[str, Any], request: Request) -> dict[str, Any]:
        if spec.get("id") and book.get_budget(str(spec["id"])) is not None:
            raise HTTPException(409, detail=f"budget {spec['id']!r} exists; PUT /v1/budgets/{{id}} to change it")
        return put(spec, actor(request)).to_json()

    @router.get("/v1/budgets/status", dependencies=manage)
    def all_status() -> list[dict[str, Any]]:
        return [s.to_json() for s in book.status()]

    @router.get("/v1/budgets/alerts", dependencies=manage)
    def alerts() -> dict[str, Any]:
        out: dict[str, Any] = {"alerts": [a.to_json() for a in book.alerts]}
        if notifier is not None:
            out["deliveries"] = [
                {
                    "idempotency_key": d.idempotency_key,
                    "type": d.kind,
                    "budget": d.budget_id,
                    "delivered": d.delivered,
                    "attempts": d.attempts,
                    "status": d.status,
                    "error": d.error,
                    "at": d.at.isoformat(),
                }
                for d in notifier.deliveries
            ]
            out["failures"] = notifier.failures
            out["dropped"] = notifier.dropped
        return out

    @router.get("/v1/budgets/{budget_id}", dependencies=manage)
    def get(budget_id: str) -> dict[str, Any]:
        budget = book.get_budget(budget_id)
        if budget is None:
            raise HTTPException(404, detail=f"no budget {budget_id!r}")
        return budget.to_json()

    @router.put("/v1/budgets/{budget_id}", dependencies=manage)
    def replace(budget_id: str, spec: dict[str, Any], request: Request) -> dict[str, Any]:
        if spec.get("id", budget_id) != budget_id:
            raise HTTPException(422, detail="the body's id differs from the path's")
        return put({**spec, "id": budget_id}, actor(request)).to_json()

    @router.delete("/v1/budgets/{budget_id}", status_code=204, dependencies=manage)
    def delete(budget_id: str, request: Request) -> None:
        if not book.delete_budget(budget_id, actor=actor(request)):
            raise HTTPException(404, detail=f"no budget {budget_id!r}")

    @router.get("/v1/budgets/{budget_id}/status", dependencies=manage)
    def one_status(budget_id: str) -> list[dict[str, Any]]:
        if book.get_budget(budget_id) is None:
            raise HTTPException(404, detail=f"no budget {budget_id!r}")
        return [s.to_json() for s in book.status(budget_id)]

    @router.get("/v1/budgets/{budget_id}/audit", dependencies=manage)
    def audit(budget_id: str) -> list[dict[str, Any]]:
        return book.audit_log(budget_id)

    # --- the seed gateway's routes: a workspace is a tenant, a project a project within it -------------
    # (the budgets' ids: budgets/_workspace_ids.py — one per scope, and only a budget of exactly that
    # scope is the workspace's)
    def seed_put(seed: SeedBudgets, body: SeedBudget, who: str) -> dict[str, Any]:
        mode = body.budget_mode
        if mode is Mode.ADAPTIVE:
            raise HTTPException(422, detail="adaptive budgets need fallback_models: use POST /v1/budgets")
        for name in SEED_NAMES:
            if seed.taken(name):
                raise HTTPException(409, detail=f"budget {seed.id_for(name)!r} exists with another scope")
        # every budget is validated before any is stored: a bad body changes nothing
        wanted: list[tuple[str, Budget | None]] = []
        for name, period, limit in (("daily", "day", body.daily_limit), ("monthly", "month", body.monthly)):
            if limit is None:
                wanted.append((name, None))
                continue
            spec = {
                "id": seed.id_for(name),
                "scope": seed.scope,
                "period": period,
                "limit": limit,
                "mode": mode,
                "thresholds": body.thresholds,
                "timezone": body.timezone,
                "alert_emails": body.alert_emails,
            }
            try:
                wanted.append((name, parse_budget(spec)))
            except InvalidBudgetError as exc:
                raise HTTPException(422, detail=str(exc)) from None
        for name, budget in wanted:
            if budget is not None:
                put(budget, who)
            elif seed.get(name) is not None:
                book.delete_budget(seed.id_for(name), actor=who)
        return seed_view(seed)

    def seed_view(seed: SeedBudgets) -> dict[str, Any]:
        daily, monthly = seed.get("daily"), seed.get("monthly")
        any_budget = monthly or daily
        thresholds = list(any_budget.thresholds if any_budget else DEFAULT_THRESHOLDS)
        mode = any_budget.mode if any_budget else Mode.HARD
        return {
            "daily_limit": None if daily is None else str(daily.limit),
            "monthly_limit": None if monthly is None else str(monthly.limit),
            "alert_thresholds": thresholds,
            "mode": mode.value,
            # Phase 17's names (money as a number)
            "monthly_budget_usd": None if monthly is None else float(monthly.limit),
            "alert_threshold_percent": min(thresholds) if thresholds else None,
            "alert_emails": list(any_budget.alert_emails) if any_budget else [],
            "hard_limit": mode is Mode.HARD,
        }

    @router.get("/api/workspaces/{workspace_id}/budget", dependencies=read_workspace)
    def ws_get(workspace_id: str) -> dict[str, Any]:
        return {"workspace_id": workspace_id, **seed_view(SeedBudgets(book, workspace_id))}

    @router.post("/api/workspaces/{workspace_id}/budget", dependencies=manage)
    def ws_post(workspace_id: str, body: SeedBudget, request: Request) -> dict[str, Any]:
        view = seed_put(SeedBudgets(book, workspace_id), body, actor(request))
        return {"workspace_id": workspace_id, **view}

    @router.get("/api/workspaces/{workspace_id}/budget/status", dependencies=read_workspace)
    def ws_status(workspace_id: str) -> dict[str, Any]:
        # every budget that applies to the workspace's calls (this route's, the environment's, global
        # ones, ``/v1/budgets``'), the strictest per period and overall: the same answer as ``/v1/usage``
        scope = {"tenant": workspace_id}
        out: dict[str, Any] = {"workspace_id": workspace_id}
        for name, period in (("daily", Period.DAY), ("monthly", Period.MONTH)):
            row = book.scope_status(scope, period=period)
            out[name] = None if row is None else row.to_json()
        strictest = book.scope_status(scope)
        out["status"] = "healthy" if strictest is None else strictest.state
        out["budget_id"] = None if strictest is None else strictest.budget.id
        return {**out, **phase17_status(book.scope_status(scope, period=Period.MONTH, unit=Unit.USD))}

    @router.post("/api/projects/{project_id}/budget", dependencies=manage)
    def project_post(
        project_id: str, body: SeedBudget, request: Request, workspace_id: str = Query(...)
    ) -> dict[str, Any]:
        view = seed_put(SeedBudgets(book, workspace_id, project_id), body, actor(request))
        return {"workspace_id": workspace_id, "project_id": project_id, **view}

    return router
