"""The ``costspan`` command line follows one convention, checked by running the real CLI.

Every command has help; ``--data-dir`` goes before or after the command and ``COSTSPAN_DATA_DIR``
counts the same for every command; bad input exits 2 with one line; ``serve`` prints the address it
really bound; ``budgets`` manages a running server's budgets with clear errors.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest

from costspan.processor.api._keys import ROLES, KeyStore
from costspan.processor.serve._cli import build_parser

BIN = Path(sys.executable).parent


def costspan(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "costspan"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"costspan {' '.join((*path, name))} has no one-line help"
                yield " ".join((*path, name)), sub
                yield from _parsers(sub, (*path, name))


def test_every_command_has_help_and_a_description() -> None:
    found = dict(_parsers(build_parser()))
    assert {"price", "pricing", "pricing list", "demo", "serve", "keys", "keys create", "budgets"} <= set(found)
    assert {"budgets list", "budgets create", "budgets show", "budgets delete", "reprice"} <= set(found)
    for name, parser in found.items():
        assert parser.description, f"costspan {name} --help has no description"
    # the key roles the help names are the key store's
    role_help = next(a.help for a in found["keys create"]._actions if a.dest == "role") or ""
    assert all(role in role_help for role in ROLES)


def test_version() -> None:
    proc = costspan("--version")
    assert (proc.returncode, proc.stdout) == (0, f"costspan {version('costspan')}\n")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["price", "--model", "gpt-4o", "--tier", "turbo"], "invalid choice: 'turbo'"),
        (["price", "--model", "gpt-4o", "--input-tokens", "12x"], "--input-tokens must be a whole number"),
        (["price", "--model", "gpt-4o", "--currency", "XXX"], "unknown currency"),
        (["serve", "--port", "eighty"], "invalid int value"),
        (["keys", "create"], "--role"),
        (["keys", "create", "--role", "root"], "--role must be one of"),
        (["budgets", "create", "--limit", "5"], "needs --period"),
        (["budgets", "create", "--period", "day", "--limit", "5", "--scope", "planet=mars"], "--scope takes"),
        (["budgets", "create", "--period", "fortnight"], "invalid choice"),
        (["reprice", "--since", "yesterday-ish"], "costspan reprice:"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], says: str, tmp_path: Path) -> None:
    proc = costspan(*argv, env={"COSTSPAN_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert "usage:" not in proc.stderr and "Traceback" not in proc.stderr


def test_data_dir_goes_before_or_after_the_command_and_the_environment_counts(tmp_path: Path) -> None:
    after, before, env_dir, elsewhere = (tmp_path / n for n in ("after", "before", "env", "cwd"))
    elsewhere.mkdir()
    assert costspan("keys", "create", "--role", "admin", "--data-dir", str(after), cwd=elsewhere).returncode == 0
    assert costspan("keys", "--data-dir", str(after), "create", "--role", "metrics", cwd=elsewhere).returncode == 0
    assert costspan("--data-dir", str(before), "keys", "create", "--role", "admin", cwd=elsewhere).returncode == 0
    made = costspan("keys", "create", "--role", "ingest", env={"COSTSPAN_DATA_DIR": str(env_dir)}, cwd=elsewhere)
    assert made.returncode == 0
    assert [k.role for k in KeyStore(after).list()] == ["admin", "metrics"]
    assert [k.role for k in KeyStore(before).list()] == ["admin"]
    assert [k.role for k in KeyStore(env_dir).list()] == ["ingest"]
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing went to ./costspan-data
    # a flag beats the environment, wherever it stands
    listing = costspan("keys", "list", "--data-dir", str(before), env={"COSTSPAN_DATA_DIR": str(env_dir)})
    assert " admin " in listing.stdout and " ingest " not in listing.stdout
    listing = costspan("--data-dir", str(env_dir), "keys", "list", env={"COSTSPAN_DATA_DIR": str(before)})
    assert " ingest " in listing.stdout and " admin " not in listing.stdout


@contextmanager
def serving(*argv: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``costspan serve --port 0 ...``; yields the URL it printed once bound."""
    proc = subprocess.Popen(
        [str(BIN / "costspan"), "serve", "--port", "0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"costspan serve: listening on (http://127\.0\.0\.1:(\d+)), data in .+\n", line)
        assert match is not None, line + (proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
        assert int(match.group(2)) > 0
        yield match.group(1), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_serve_prints_its_real_port_and_budgets_work_over_its_api(tmp_path: Path) -> None:
    env = {"COSTSPAN_DATA_DIR": str(tmp_path / "data")}
    admin = costspan("keys", "create", "--role", "admin", env=env).stdout.strip()
    tenant = costspan("keys", "create", "--role", "tenant", "--tenant", "acme", env=env).stdout.strip()
    # the server finds the keys `keys` made through the same environment variable
    with serving(env=env) as (url, _):
        # the URL may also come from the environment, the key from COSTSPAN_API_KEY
        as_admin = {"COSTSPAN_URL": url, "COSTSPAN_API_KEY": admin}
        made = costspan(
            "budgets", "create", "--id", "acme-daily", "--scope", "tenant=acme", "--period", "day", "--limit", "50",
            env=as_admin,
        )  # fmt: skip
        assert (made.returncode, made.stdout) == (0, "budget acme-daily created\n"), made.stderr
        listing = costspan("budgets", "list", "--url", url, "--key", admin)
        assert listing.returncode == 0
        assert re.search(r"^acme-daily +tenant=acme +day +hard +50 usd +0$", listing.stdout, re.M), listing.stdout
        shown = costspan("budgets", "--url", url, "show", "acme-daily", "--key", admin)
        assert shown.returncode == 0 and "limit 50 usd" in shown.stdout and "remaining 50" in shown.stdout
        again = costspan("budgets", "create", "--id", "acme-daily", "--period", "day", "--limit", "5", env=as_admin)
        assert again.returncode == 1 and again.stderr.startswith("costspan budgets: the server answered 409")

        for key, code in (("csk_not_a_key", "401"), (tenant, "403")):
            refused = costspan("budgets", "list", "--url", url, "--key", key)
            assert refused.returncode == 1 and f"({code}" in refused.stderr, refused.stderr
            assert refused.stderr.count("\n") == 1 and refused.stdout == ""
        no_key = costspan("budgets", "list", "--url", url, env={"COSTSPAN_API_KEY": ""})
        assert no_key.returncode == 1 and "COSTSPAN_API_KEY" in no_key.stderr

        assert costspan("budgets", "delete", "acme-daily", env=as_admin).stdout == "budget acme-daily deleted\n"
        gone = costspan("budgets", "show", "acme-daily", env=as_admin)
        assert gone.returncode == 1 and "404" in gone.stderr
    down = costspan("budgets", "list", "--url", url, "--key", admin)
    assert down.returncode == 1 and "cannot reach" in down.stderr and down.stderr.count("\n") == 1


def test_serve_on_a_busy_port_prints_only_the_error(tmp_path: Path) -> None:
    env = {"COSTSPAN_DATA_DIR": str(tmp_path)}
    assert costspan("keys", "create", "--role", "admin", env=env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = costspan("serve", "--port", str(port), env=env)
    assert proc.returncode == 1
    assert proc.stdout == ""  # never claimed to listen
    assert proc.stderr.startswith(f"costspan serve: cannot listen on 127.0.0.1:{port}: ")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert time.monotonic() - started < 30
