"""The ``costspan`` command line: pricing commands, the demo, and the server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from costspan.pricing.cli import add_pricing_commands, run_handler
from costspan.processor._demo.command import add_demo_command
from costspan.processor.api._keys_cli import add_keys_command
from costspan.processor.serve._reprice_cli import add_reprice_command
from costspan.processor.serve._serve_cli import add_serve_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costspan",
        description="costspan: what your LLM calls cost, who caused it, and budgets that stop the spend.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pricing_commands(sub)
    add_demo_command(sub)
    add_serve_command(sub)
    add_keys_command(sub)
    add_reprice_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run_handler(args, sys.stdout, sys.stderr)
    except BrokenPipeError:
        # The reader went away (`costspan pricing list | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
