"""``costspan budgets list|create|show|delete``: the budgets of a running ``costspan serve``, over its API.

Talks to ``/v1/budgets`` with an admin key (``--key`` or ``$COSTSPAN_API_KEY``) at ``--url`` (or
``$COSTSPAN_URL``, default ``http://127.0.0.1:4318``). Standard library only: it needs no server
side installed. A refused key, an unknown budget or an unreachable server exits 1 with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TextIO

__all__ = ["BudgetsCliError", "add_budgets_command", "run_budgets"]

DEFAULT_URL = "http://127.0.0.1:4318"
_PERIODS = ("per_request", "hour", "day", "week", "month", "year", "total")
_SCOPE_DIMENSIONS = ("tenant", "service", "workflow", "user", "project", "provider", "model")


class BudgetsCliError(RuntimeError):
    """A failed call to the server, said in one line."""


def add_budgets_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``budgets`` with ``list``, ``create``, ``show`` and ``delete``."""
    budgets = subparsers.add_parser(
        "budgets",
        help="list, create, show and delete the budgets of a running costspan serve",
        description=(
            "Manage the budgets of a running costspan serve through its API (/v1/budgets), with an admin "
            f"key. --url defaults to $COSTSPAN_URL, else {DEFAULT_URL}; --key to $COSTSPAN_API_KEY."
        ),
    )
    _add_connection_flags(budgets)
    sub = budgets.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")
    sub.add_parser("list", help="every budget with its status", description="Every budget, with spend.")
    show = sub.add_parser(
        "show", help="one budget and its status", description="One budget, its definition and status."
    )
    show.add_argument("budget_id")
    create = sub.add_parser(
        "create",
        help="create a budget",
        description=(
            "Create a budget from flags, or from a JSON file with --file (the API's body; flags are then "
            "not allowed). Example: costspan budgets create --id acme-daily --scope tenant=acme --period day "
            "--limit 50"
        ),
    )
    create.add_argument("--file", type=Path, help="the budget as JSON (the body of POST /v1/budgets)")
    create.add_argument("--id", help="the budget's id (generated when left out)")
    create.add_argument("--name", help="a label")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="DIMENSION=VALUE",
        help=f"repeatable; dimensions: {', '.join(_SCOPE_DIMENSIONS)} (none: a global budget; VALUE * = each)",
    )
    create.add_argument("--period", choices=_PERIODS, help="the period the limit applies to")
    create.add_argument("--limit", help="the limit, a non-negative decimal")
    create.add_argument("--unit", choices=("usd", "tokens", "requests"), help="the limit's unit (default usd)")
    create.add_argument("--mode", choices=("hard", "soft", "adaptive"), help="default hard")
    create.add_argument("--timezone", help="IANA zone where days start (default UTC)")
    create.add_argument("--fallback-model", action="append", default=[], help="adaptive: repeatable, in order")
    create.add_argument("--max-tokens-cap", type=int, help="adaptive: cap max_tokens to this")
    create.add_argument("--threshold", action="append", type=int, default=[], help="alert percentage; repeatable")
    delete = sub.add_parser("delete", help="delete a budget", description="Delete a budget by id.")
    delete.add_argument("budget_id")
    for action_parser in sub.choices.values():
        _add_connection_flags(action_parser)
    budgets.set_defaults(handler=run_budgets)


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--key``, ``--json``: accepted before or after the action (``budgets --url U list``)."""
    parser.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"the server (default $COSTSPAN_URL, else {DEFAULT_URL})"
    )
    parser.add_argument("--key", default=argparse.SUPPRESS, help="an admin key (default $COSTSPAN_API_KEY)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the answer as JSON")


def run_budgets(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run one action; 0 on success, 2 for a bad command line, 1 when the server refuses or is away."""
    try:
        spec = _spec(args) if args.budgets_command == "create" else None
    except ValueError as exc:
        err.write(f"costspan budgets: {exc}\n")
        return 2
    client = _Client(_option(args, "url", "COSTSPAN_URL") or DEFAULT_URL, _option(args, "key", "COSTSPAN_API_KEY"))
    as_json = bool(getattr(args, "json", False))
    try:
        action = args.budgets_command
        if action == "list":
            statuses = client.call("GET", "/v1/budgets/status")
            budgets = client.call("GET", "/v1/budgets")
            _print(out, {"budgets": budgets, "status": statuses} if as_json else _table(budgets, statuses), as_json)
        elif action == "show":
            path = "/v1/budgets/" + urllib.parse.quote(args.budget_id, safe="")
            budget, status = client.call("GET", path), client.call("GET", path + "/status")
            _print(out, {"budget": budget, "status": status} if as_json else _details(budget, status), as_json)
        elif action == "create":
            created = client.call("POST", "/v1/budgets", spec)
            _print(out, created if as_json else [f"budget {created['id']} created"], as_json)
        else:
            client.call("DELETE", "/v1/budgets/" + urllib.parse.quote(args.budget_id, safe=""))
            _print(out, {"deleted": args.budget_id} if as_json else [f"budget {args.budget_id} deleted"], as_json)
    except BudgetsCliError as exc:
        err.write(f"costspan budgets: {exc}\n")
        return 1
    return 0


def _option(args: argparse.Namespace, name: str, env: str) -> str:
    value = getattr(args, name, None)
    return str(value) if value else os.environ.get(env, "").strip()


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body from ``--file`` or from the flags. Raises ValueError for a bad command line."""
    flags = {
        "id": args.id,
        "name": args.name,
        "period": args.period,
        "limit": args.limit,
        "unit": args.unit,
        "mode": args.mode,
        "timezone": args.timezone,
        "max_tokens_cap": args.max_tokens_cap,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    listed = {"fallback_models": args.fallback_model, "thresholds": args.threshold}
    given |= {k: v for k, v in listed.items() if v}
    if args.file is not None:
        if given or args.scope:
            raise ValueError("give the budget either as --file or as flags, not both")
        try:
            body = json.loads(args.file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read {args.file}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"{args.file} is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError(f"{args.file} must hold one JSON object (a budget)")
        return body
    missing = [f"--{name}" for name in ("period", "limit") if name not in given]
    if missing:
        raise ValueError(f"create needs {' and '.join(missing)} (or --file)")
    scope: dict[str, str] = {}
    for item in args.scope:
        dimension, sep, value = item.partition("=")
        if not sep or dimension not in _SCOPE_DIMENSIONS or not value:
            raise ValueError(
                f"--scope takes DIMENSION=VALUE with a dimension of {', '.join(_SCOPE_DIMENSIONS)}; got {item!r}"
            )
        scope[dimension] = value
    return {**given, "scope": scope}


class _Client:
    def __init__(self, url: str, key: str) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json", **({"X-API-Key": self.key} if self.key else {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise BudgetsCliError(self._refusal(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BudgetsCliError(f"cannot reach {self.url}: {reason} (is costspan serve running there?)") from None
        return json.loads(raw) if raw else None

    def _refusal(self, exc: urllib.error.HTTPError) -> str:
        try:
            answer = json.loads(exc.read())
            detail = str(answer.get("detail") or answer.get("error") or exc.reason)
        except (ValueError, AttributeError, OSError):
            detail = str(exc.reason)
        detail = " ".join(detail.split())  # one line, whatever the server said
        if exc.code == 401:
            hint = "" if self.key else " (pass --key or set COSTSPAN_API_KEY to an admin key)"
            return f"the server refused the key (401): {detail}{hint}"
        if exc.code == 403:
            return f"the key may not manage budgets (403, an admin key is needed): {detail}"
        return f"the server answered {exc.code}: {detail}"


def _print(out: TextIO, value: Any, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(value, indent=2) + "\n")
    else:
        out.write("".join(f"{line}\n" for line in value))


def _scope_text(scope: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(scope.items())) or "(global)"


def _table(budgets: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> list[str]:
    spent: dict[str, str] = {}
    for status in statuses:  # a "*" scope has one status per value: show the total of them
        spent[status["budget_id"]] = status["spent"] if status["budget_id"] not in spent else "(several)"
    lines = [f"{'ID':<24}{'SCOPE':<28}{'PERIOD':<12}{'MODE':<10}{'LIMIT':>14} {'UNIT':<9}SPENT"]
    for b in budgets:
        lines.append(
            f"{b['id']:<24}{_scope_text(b['scope']):<28}{b['period']:<12}{b['mode']:<10}{b['limit']:>14} "
            f"{b['unit']:<9}{spent.get(b['id'], '0')}"
        )
    if not budgets:
        lines.append("(no budgets)")
    return lines


def _details(budget: dict[str, Any], statuses: list[dict[str, Any]]) -> list[str]:
    lines = [f"budget {budget['id']}" + (f" ({budget['name']})" if budget.get("name") else "")]
    lines.append(f"  scope {_scope_text(budget['scope'])}, {budget['period']} ({budget['timezone']}), {budget['mode']}")
    lines.append(f"  limit {budget['limit']} {budget['unit']}, alerts at {budget['thresholds']} %")
    if budget.get("fallback_models") or budget.get("max_tokens_cap"):
        lines.append(f"  fallback models {budget['fallback_models']}, max_tokens cap {budget['max_tokens_cap']}")
    for s in statuses:
        lines.append(
            f"  {_scope_text(s['scope'])}: spent {s['spent']}, reserved {s['reserved']}, remaining {s['remaining']}"
            f" ({s['status']}); resets {s['resets_at'] or 'never'}"
        )
    return lines
