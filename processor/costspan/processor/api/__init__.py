"""The usage API: keys and roles, pre-aggregated usage indexes, the seeds' queries, exports.

Mount it on the processor's app with :func:`include_usage_api`; register ``costspan keys`` with
:func:`add_keys_command`.
"""

from typing import Any

from costspan.processor._exports import lazy_exports as _lazy_exports

__all__ = [
    "ADMIN_KEY_ENV",
    "EXPORT_COLUMNS",
    "ApiKey",
    "EdgeGuard",
    "KeyStore",
    "Principal",
    "UsageIndex",
    "add_keys_command",
    "check_startup",
    "include_usage_api",
    "is_loopback",
    "principal_of",
    "read_scope",
    "require_admin",
    "require_ingest",
    "require_workspace_reader",
    "run_keys",
]

# Loaded on first use: ``costspan price`` and ``costspan keys`` must not import FastAPI.
_WHERE = {
    "ADMIN_KEY_ENV": "costspan.processor.api._keys",
    "EXPORT_COLUMNS": "costspan.processor.api._routes_calls",
    "ApiKey": "costspan.processor.api._keys",
    "EdgeGuard": "costspan.processor.api._edge",
    "KeyStore": "costspan.processor.api._keys",
    "Principal": "costspan.processor.api._keys",
    "UsageIndex": "costspan.processor.api._index",
    "add_keys_command": "costspan.processor.api._keys_cli",
    "check_startup": "costspan.processor.api._auth",
    "include_usage_api": "costspan.processor.api._mount",
    "is_loopback": "costspan.processor.api._auth",
    "principal_of": "costspan.processor.api._auth",
    "read_scope": "costspan.processor.api._auth",
    "require_admin": "costspan.processor.api._auth",
    "require_ingest": "costspan.processor.api._auth",
    "require_workspace_reader": "costspan.processor.api._auth",
    "run_keys": "costspan.processor.api._keys_cli",
}


_load = _lazy_exports(__name__, _WHERE)


def __getattr__(name: str) -> Any:
    return _load(name)
