"""Names a package exports but loads on first use, so importing the package stays cheap.

``costspan price`` and ``costspan keys`` import ``costspan.processor``; they must not pay for FastAPI,
prometheus_client or the OpenTelemetry SDK. A package lists where each lazy name lives and defines::

    _load = lazy_exports(__name__, _WHERE)

    def __getattr__(name: str) -> Any:
        return _load(name)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` body: imports ``where[name]`` and binds ``name`` in ``package`` once."""
    namespace = sys.modules[package].__dict__

    def load(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups are plain module attributes
        return value

    return load
