"""`costspan keys create|list|revoke`: registered on the lead's CLI by :func:`add_keys_command`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from costspan.processor.api._keys import ROLES, KeyStore

__all__ = ["add_keys_command", "run_keys"]


def add_keys_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``keys`` with ``create``, ``list`` and ``revoke``; handlers return an exit code."""
    keys = subparsers.add_parser("keys", help="manage the usage API's keys (stored hashed in the data dir)")
    keys.add_argument("--data-dir", type=Path, default=Path("./costspan-data"), help="default ./costspan-data")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--tenant", default="", help="the tenant a tenant (or ingest) key is limited to")
    create.add_argument("--name", default="", help="a label to recognise the key by")
    sub.add_parser("list", help="list keys (ids, roles, tenants; never secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    keys.set_defaults(handler=run_keys)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_keys(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    store = KeyStore(args.data_dir)
    action = args.keys_command
    if action == "create":
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
