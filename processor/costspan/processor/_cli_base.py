"""What every ``costspan`` command shares: one-line usage errors, ``--data-dir``, the processor extra.

Imports nothing beyond the standard library: ``costspan --version``, ``costspan price`` and the
"install the processor extra" message must work in an install with only ``[instrumentation]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "PROCESSOR_EXTRA",
    "CliParser",
    "add_data_dir_flag",
    "costspan_version",
    "data_dir_flag",
    "exit_missing_extra",
    "missing_processor_modules",
    "resolve_data_dir",
]

DATA_DIR_ENV = "COSTSPAN_DATA_DIR"
DEFAULT_DATA_DIR = Path("./costspan-data")
PROCESSOR_EXTRA = "pip install 'costspan[processor]'"

#: Modules of the ``[processor]`` extra that the server side imports (the import name of each).
_PROCESSOR_MODULES = (
    "fastapi",
    "uvicorn",
    "pydantic_settings",
    "orjson",
    "prometheus_client",
    "opentelemetry.sdk",
    "opentelemetry.proto",
    "google.protobuf",
)


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``costspan price: error: ...``), exit 2.

    argparse prints the whole usage block before the error; a long block hides the one line that
    says what is wrong. ``--help`` still shows the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_data_dir_flag(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, accepted on the top-level parser and on every command that uses the data dir.

    Its default is "not given" (``argparse.SUPPRESS``), so a value given before the command
    (``costspan --data-dir X keys create``) is not overwritten by the command's own default.
    """
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"the data dir: ledger, snapshots, keys, budgets (default ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})",
    )


def data_dir_flag(args: argparse.Namespace) -> Path | None:
    """The ``--data-dir`` given on the command line (before or after the command), else None."""
    value = getattr(args, "data_dir", None)
    return value if isinstance(value, Path) else None


def resolve_data_dir(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``$COSTSPAN_DATA_DIR``, else ``./costspan-data`` — as ``costspan serve`` does
    (serve and reprice also read a ``--config`` file, between the environment and the default)."""
    given = data_dir_flag(args)
    if given is not None:
        return given
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env) if env else DEFAULT_DATA_DIR


def missing_processor_modules() -> list[str]:
    """The ``[processor]`` extra's modules that cannot be imported here (empty: it is installed)."""
    missing = []
    for name in _PROCESSOR_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def costspan_version() -> str:
    """The installed distribution's version (``unknown`` when run from a source tree not installed)."""
    try:
        return version("costspan")
    except PackageNotFoundError:
        return "unknown"


def exit_missing_extra(command: str, missing: Sequence[str]) -> int:
    """Say which extra to install, in one line; the exit code for it."""
    sys.stderr.write(
        f"costspan {command}: needs the processor extra (missing {', '.join(missing)}): {PROCESSOR_EXTRA}\n"
    )
    return 2
