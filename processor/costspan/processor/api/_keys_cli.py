"""`costspan keys create|list|revoke`: registered on the lead's CLI by :func:`add_keys_command`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from costspan.processor._cli_base import add_data_dir_flag, resolve_data_dir

__all__ = ["add_keys_command", "run_keys"]


def add_keys_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``keys`` with ``create``, ``list`` and ``revoke``; handlers return an exit code."""
    keys = subparsers.add_parser(
        "keys",
        help="manage the usage API's keys (stored hashed in the data dir)",
        description=(
            "Create, list and revoke the API keys of the server whose data dir this is (the keys live in "
            "it, hashed). A running costspan serve sees new and revoked keys at once."
        ),
    )
    add_data_dir_flag(keys)
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key and print it once", description="Create a key, print it once.")
    # the roles are the key store's (api/_keys.py ROLES); named here so that the parser imports nothing
    # of the server side (an instrumentation-only install still gets `costspan keys --help`)
    create.add_argument(
        "--role",
        required=True,
        metavar="ROLE",
        help="admin (everything), tenant (one tenant's data), ingest (send spans, check budgets), "
        "metrics (scrape /metrics only)",
    )
    create.add_argument("--tenant", default="", help="the tenant a tenant (or ingest) key is limited to")
    create.add_argument("--name", default="", help="a label to recognise the key by")
    add_data_dir_flag(create)
    listing = sub.add_parser(
        "list", help="list keys (ids, roles, tenants; never secrets)", description="List the keys; never secrets."
    )
    add_data_dir_flag(listing)
    revoke = sub.add_parser("revoke", help="revoke a key by id", description="Revoke a key by its id.")
    revoke.add_argument("key_id")
    add_data_dir_flag(revoke)
    keys.set_defaults(handler=run_keys)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_keys(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from costspan.processor.api._keys import ROLES, KeyStore

    store = KeyStore(resolve_data_dir(args))
    action = args.keys_command
    if action == "create":
        if args.role not in ROLES:
            err.write(f"costspan keys: --role must be one of {', '.join(ROLES)}, got {args.role!r}\n")
            return 2
        try:
            key, secret = store.create(args.role, args.tenant, args.name)
        except ValueError as exc:
            err.write(f"costspan keys: {exc}\n")
            return 2
        out.write(f"{secret}\n")
        err.write(f"key {key.id} (role {key.role}{', tenant ' + key.tenant if key.tenant else ''}) created; ")
        err.write("store it now: it is not shown again\n")
        return 0
    if action == "list":
        out.write(f"{'ID':<14}{'ROLE':<8}{'TENANT':<20}{'CREATED':<22}{'REVOKED':<22}NAME\n")
        for k in store.list():
            out.write(
                f"{k.id:<14}{k.role:<8}{k.tenant or '-':<20}{_when(k.created):<22}{_when(k.revoked):<22}{k.name}\n"
            )
        return 0
    if store.revoke(args.key_id):
        out.write(f"key {args.key_id} revoked\n")
        return 0
    err.write(f"costspan keys: no active key {args.key_id!r}\n")
    return 1
