"""The layout rules of DESIGN.md: one namespace package in three slices, imports pointing one way."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLICES = ("pricing", "instrumentation", "processor")
# slice → import prefixes it must not use
BANNED = {
    "pricing": ("opentelemetry", "costspan.instrumentation", "costspan.processor", "fastapi", "prometheus_client"),
    "instrumentation": ("costspan.processor", "opentelemetry.sdk", "fastapi", "prometheus_client", "uvicorn"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


@pytest.mark.parametrize("slice_name", list(BANNED))
def test_imports_point_one_way(slice_name: str) -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / slice_name).rglob("*.py"))
        for line, module in _imports(path)
        if any(module == b or module.startswith(b + ".") for b in BANNED[slice_name])
    ]
    assert offences == []


def test_instrumentation_uses_only_the_opentelemetry_api() -> None:
    allowed: tuple[str, ...] = ("opentelemetry.trace", "opentelemetry.metrics", "opentelemetry.context")
    allowed += (
        "opentelemetry.baggage",
        "opentelemetry.instrumentation",
        "opentelemetry.propagate",
        "opentelemetry.util",
        "opentelemetry.semconv",
    )
    used = {
        module
        for path in (ROOT / "instrumentation").rglob("*.py")
        for _, module in _imports(path)
        if module.startswith("opentelemetry")
    }
    assert {m for m in used if m != "opentelemetry" and not m.startswith(allowed)} == set()


def test_namespace_package_has_no_root_init() -> None:
    for name in SLICES:
        assert (ROOT / name / "costspan" / name / "__init__.py").is_file()
        assert not (ROOT / name / "costspan" / "__init__.py").exists()
    costspan = importlib.import_module("costspan")
    assert getattr(costspan, "__file__", None) is None  # a PEP 420 namespace package
    assert {Path(p).parent.name for p in costspan.__path__} == set(SLICES)


def test_pricing_imports_without_opentelemetry() -> None:
    import subprocess

    code = (
        "import sys, costspan.pricing, costspan.pricing.cli;"
        "bad = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'costspan.instrumentation')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_surface_is_all() -> None:
    from costspan import pricing

    public = {n for n in dir(pricing) if not n.startswith("_")}
    assert set(pricing.__all__) == public - {"cli"}
    for name in pricing.__all__:
        assert getattr(pricing, name) is not None


# --- the processor's public surface -------------------------------------------------------------------
PROCESSOR_ALL = [
    "Budget",
    "BudgetBook",
    "BudgetExceededError",
    "BudgetSpanProcessor",
    "BudgetStatus",
    "CallRecord",
    "CostspanSpanProcessor",
    "InProcess",
    "InvalidBudgetError",
    "KeyStore",
    "Normalizer",
    "QueueFullError",
    "RemoteBudgetGuard",
    "Settings",
    "Store",
    "StoreConfig",
    "UsageIndex",
    "WebhookNotifier",
    "budget_guard",
    "build_server_app",
    "create_app",
    "include_usage_api",
    "load_settings",
    "track_in_process",
]
SUB_PACKAGES = ("ingest", "store", "budgets", "api", "serve", "cluster")


def test_processor_public_surface_is_all() -> None:
    from costspan import processor

    assert processor.__all__ == PROCESSOR_ALL  # sorted, and changed only on purpose
    for name in processor.__all__:
        value = getattr(processor, name)
        assert value is not None
        assert value.__module__.startswith(("costspan.processor.", "costspan.instrumentation.")), name
    # what users see is what __all__ says: no other public name but the sub-packages (and import helpers)
    public = {n for n in dir(processor) if not n.startswith("_")}
    assert {n for n in public if not inspect.ismodule(getattr(processor, n))} == set(PROCESSOR_ALL)
    with pytest.raises(AttributeError):
        _ = processor.no_such_name
    from costspan.processor import _inprocess, store

    assert (processor.Store, processor.track_in_process) == (store.Store, _inprocess.track_in_process)


@pytest.mark.parametrize("name", SUB_PACKAGES)
def test_processor_sub_packages_all_resolve(name: str) -> None:
    package = importlib.import_module(f"costspan.processor.{name}")
    names = list(package.__all__)
    assert len(set(names)) == len(names)
    for attr_name in names:
        assert getattr(package, attr_name) is not None, f"costspan.processor.{name}.{attr_name}"
    # eager packages: every public name they bind is listed (lazy ones bind nothing until asked)
    public = {n for n in vars(package) if not n.startswith("_") and not inspect.ismodule(vars(package)[n])}
    assert public - set(names) <= {"annotations", "Any", "TYPE_CHECKING"}


def test_processor_imports_without_fastapi_or_the_sdk() -> None:
    """``costspan price`` imports the processor package and the CLI: neither may pull in the server side."""
    import subprocess

    code = (
        "import sys, costspan.processor, costspan.processor.serve._cli;"
        "heavy = ('fastapi', 'starlette', 'uvicorn', 'prometheus_client', 'opentelemetry.sdk');"
        "bad = sorted(m for m in sys.modules if m.startswith(heavy));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: processor sub-package → the other sub-packages it may import (the data path: store ← ingest ← the
#: readers of what is stored ← the server that composes them ← the demo)
PROCESSOR_LAYERS = {
    "store": set(),
    "ingest": {"store"},
    "budgets": {"store"},
    "api": {"store", "ingest"},
    "cluster": {"store", "ingest", "api"},
    "serve": {"store", "ingest", "budgets", "api", "cluster", "_demo"},  # _demo: only to register `costspan demo`
}


@pytest.mark.parametrize("package", list(PROCESSOR_LAYERS))
def test_processor_sub_packages_import_down_the_data_path(package: str) -> None:
    subs = {p.name for p in (ROOT / "processor" / "costspan" / "processor").iterdir() if (p / "__init__.py").is_file()}
    allowed = PROCESSOR_LAYERS[package] | {package}
    offences = []
    for path in sorted((ROOT / "processor" / "costspan" / "processor" / package).rglob("*.py")):
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[:2] == ["costspan", "processor"] and len(parts) > 2 and parts[2] in subs - allowed:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offences == []


# --- costspan.track: the library API (in the processor slice: it needs the in-process processor) ---------
TRACK_ALL = [
    "Budget",
    "BudgetExceededError",
    "Degradation",
    "EnforcementLevel",
    "SessionTotals",
    "TokenCount",
    "TrackedCall",
    "Tracker",
    "Tracking",
    "count_tokens",
    "current",
    "init",
    "session",
    "shutdown",
    "track",
]


def test_track_public_surface_is_all() -> None:
    track = importlib.import_module("costspan.track")
    assert track.__all__ == TRACK_ALL  # sorted, and changed only on purpose
    public = {n for n in dir(track) if not n.startswith("_") and not inspect.ismodule(getattr(track, n))}
    assert public == set(TRACK_ALL)
    for name in TRACK_ALL:
        value = getattr(track, name)
        assert value.__module__.startswith(("costspan.track.", "costspan.instrumentation.")), name
    assert (ROOT / "processor" / "costspan" / "track" / "__init__.py").is_file()


def test_track_imports_without_fastapi() -> None:
    """An app that only counts tokens and tracks calls does not load the server side."""
    import subprocess

    code = (
        "import sys, costspan.track;"
        "heavy = ('fastapi', 'starlette', 'uvicorn', 'prometheus_client');"
        "bad = sorted(m for m in sys.modules if m.startswith(heavy));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
