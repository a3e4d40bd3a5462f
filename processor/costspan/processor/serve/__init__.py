"""``costspan serve`` and the ``costspan`` command line: the app factory, settings, metrics, the CLI.

:func:`create_app` is the receiver alone (``/v1/traces``, ``/metrics``, health); :func:`build_server_app`
adds budgets, the usage API and the dashboard on the same app. Loaded on first use: ``costspan price``
must not import FastAPI.
"""

from typing import Any

from costspan.processor._exports import lazy_exports as _lazy_exports

__all__ = ["Settings", "StoreCollector", "build_server_app", "create_app", "load_settings", "main", "run_serve"]

_WHERE = {
    "Settings": "costspan.processor.serve._settings",
    "StoreCollector": "costspan.processor.serve._metrics",
    "build_server_app": "costspan.processor.serve._server",
    "create_app": "costspan.processor.serve._app",
    "load_settings": "costspan.processor.serve._settings",
    "main": "costspan.processor.serve._cli",
    "run_serve": "costspan.processor.serve._serve_cli",
}


_load = _lazy_exports(__name__, _WHERE)


def __getattr__(name: str) -> Any:
    return _load(name)
