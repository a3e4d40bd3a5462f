"""The ``costspan`` command line: pricing commands, the demo, the server, keys, budgets, repricing.

One convention for every command: each has help; ``--data-dir`` is accepted before or after the
command and ``COSTSPAN_DATA_DIR`` is honoured the same way (:mod:`costspan.processor._cli_base`); a bad command line
exits 2 with one line; a command that needs the ``[processor]`` extra says so (exit 2) in an
install that lacks it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from costspan.pricing.cli import add_pricing_commands, run_handler
from costspan.processor._cli_base import (
    CliParser,
    add_data_dir_flag,
    costspan_version,
    exit_missing_extra,
    missing_processor_modules,
)
from costspan.processor._demo.command import add_demo_command
from costspan.processor.api._keys_cli import add_keys_command
from costspan.processor.serve._budgets_cli import add_budgets_command
from costspan.processor.serve._reprice_cli import add_reprice_command
from costspan.processor.serve._serve_cli import add_serve_command

__all__ = ["build_parser", "main"]

#: Commands that run (part of) the server side and so need the ``[processor]`` extra.
PROCESSOR_COMMANDS = frozenset({"serve", "keys", "reprice", "demo"})


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="costspan",
        description="costspan: what your LLM calls cost, who caused it, and budgets that stop the spend.",
    )
    parser.add_argument("--version", action="version", version=f"costspan {costspan_version()}")
    add_data_dir_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pricing_commands(sub)
    add_demo_command(sub)
    add_serve_command(sub)
    add_keys_command(sub)
    add_budgets_command(sub)
    add_reprice_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    needs_processor = args.command in PROCESSOR_COMMANDS and not getattr(args, "pricing_only", False)
    missing = missing_processor_modules() if needs_processor else []
    if missing:
        return exit_missing_extra(args.command, missing)
    try:
        return run_handler(args, sys.stdout, sys.stderr)
    except BrokenPipeError:
        # The reader went away (`costspan pricing list | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
