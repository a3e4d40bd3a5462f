"""`costspan reprice`: recompute stored calls' cost with the current catalog.

Offline (no server on the data dir) it opens the data dir itself: the store (ledger, rollups,
snapshots) and the budgets' journal; the usage index follows when the server next starts. With
``--server URL`` it asks that running server (``POST /v1/reprice``, admin key), which prices with
its own catalog. A data dir that a ``costspan serve`` holds is refused offline (see
:func:`data_dir_lock`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from costspan.processor._cli_base import add_data_dir_flag, data_dir_flag

if TYPE_CHECKING:  # the server side loads when the command runs (the parser must build without it)
    from costspan.processor.serve._reprice import Window

__all__ = ["DataDirBusyError", "add_reprice_command", "data_dir_lock", "run_reprice", "summary_lines"]


class DataDirBusyError(RuntimeError):
    """Another process (a running ``costspan serve``) holds the data dir."""


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data dir's lock (:class:`~costspan.processor.store._files.DataDirLock`, the one
    ``costspan serve`` holds while it runs) for the block. Raises :class:`DataDirBusyError`."""
    from costspan.processor.store._files import DataDirLock, DataDirLockedError

    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except DataDirLockedError as exc:
        raise DataDirBusyError(f"{data_dir} is in use by a running costspan serve ({exc})") from None
    try:
        yield
    finally:
        lock.release()


def add_reprice_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``reprice``; its handler returns an exit code."""
    parser = subparsers.add_parser(
        "reprice",
        help="recompute the cost of stored calls with the current catalog",
        description=(
            "Recompute the cost of the calls that started in [--since, --until) from their stored usage, "
            "with the current catalog (the packaged one plus COSTSPAN_PRICING_FILE). The ledger keeps the "
            "original of every changed call and gains a correction with the new cost and pricing version; "
            "rollups, the usage index, /metrics and budgets follow. Running it again with the same catalog "
            "changes nothing."
        ),
    )
    parser.add_argument("--since", required=True, help="ISO date or date-time (UTC unless it says), or 7d, 12h")
    parser.add_argument("--until", help="as --since, exclusive (default: now)")
    parser.add_argument("--tenant", help="only this tenant's calls")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    add_data_dir_flag(parser)
    parser.add_argument("--config", type=Path, help="costspan serve's settings file (for the data dir)")
    parser.add_argument("--server", help="reprice through this running server (http://host:port) instead")
    parser.add_argument("--admin-key", help="admin key for --server (default $COSTSPAN_ADMIN_KEY)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run_reprice)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What a run changed, for people: one summary line and one line per tenant."""
    verb = "would change" if result["dry_run"] else "changed"
    lines = [
        f"catalog {result['catalog_version']}: {result['calls']} call(s) in the window, {verb} "
        f"{result['changed']} ({result['newly_priced']} newly priced); {result['unpriced']} unpriced call(s) "
        "kept as they were",
        f"cost of the changed calls: {result['old_total']} -> {result['new_total']} USD",
    ]
    for tenant, totals in sorted(result["by_tenant"].items()):
        lines.append(f"  tenant {tenant or '(none)'}: {totals['old']} -> {totals['new']} USD")
    return lines


def _remote(args: argparse.Namespace) -> dict[str, Any]:
    key = args.admin_key or os.environ.get("COSTSPAN_ADMIN_KEY", "")
    body = {"since": args.since, "until": args.until, "tenant": args.tenant, "dry_run": bool(args.dry_run)}
    request = urllib.request.Request(
        args.server.rstrip("/") + "/v1/reprice",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"X-API-Key": key} if key else {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise RuntimeError(f"the server answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"cannot reach {args.server}: {getattr(exc, 'reason', exc)}") from None


def _offline(args: argparse.Namespace, window: Window, err: TextIO) -> dict[str, Any]:
    from costspan.pricing import Pricer, load_catalog
    from costspan.processor.budgets import BudgetBook
    from costspan.processor.budgets._stored_calls import settle_corrections
    from costspan.processor.serve._reprice import reprice
    from costspan.processor.serve._settings import load_settings
    from costspan.processor.store._store import Store

    given = data_dir_flag(args)
    flags = {"data_dir": given} if given is not None else {}
    settings = load_settings(args.config, **flags)
    pricer = Pricer(load_catalog())
    ledger_dir = settings.data_dir / "ledger"
    if args.dry_run:  # reads the ledger only: nothing is opened for writing
        return reprice(ledger_dir, pricer, window, None, progress=err).to_json()
    if not ledger_dir.is_dir():
        raise RuntimeError(f"no ledger in {settings.data_dir}")
    with data_dir_lock(settings.data_dir):
        store = Store(settings.store_config())
        book = BudgetBook(data_dir=settings.data_dir / "budgets") if (settings.data_dir / "budgets").is_dir() else None
        if book is not None:
            budgets = book
            store.add_correction_listener(lambda corrections, _: settle_corrections(budgets, corrections))
        store.start()
        try:
            return reprice(ledger_dir, pricer, window, store.correct, progress=err).to_json()
        finally:
            store.close()
            if book is not None:
                book.close()


def run_reprice(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Parse the window, reprice (offline or through ``--server``), print what changed."""
    from costspan.processor.serve._reprice import Window, parse_time

    try:
        window = Window(
            parse_time(args.since),
            parse_time(args.until) if args.until else time.time(),
            args.tenant or None,
        )
    except ValueError as exc:
        err.write(f"costspan reprice: {exc}\n")
        return 2
    try:
        result = _remote(args) if args.server else _offline(args, window, err)
    except DataDirBusyError as exc:
        err.write(f"costspan reprice: {exc}; pass --server http://HOST:PORT to reprice through it\n")
        return 1
    except (RuntimeError, ValueError, OSError) as exc:
        err.write(f"costspan reprice: {exc}\n")
        return 1
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        out.write("".join(line + "\n" for line in summary_lines(result)))
    return 0
