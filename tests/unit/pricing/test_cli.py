"""The pricing commands, run as a user runs them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from costspan.processor.serve._cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    finally:
        sys.stdout, sys.stderr = old_out, old_err
    return code, out.getvalue(), err.getvalue()


def test_price_json() -> None:
    code, out, _ = run(
        "price",
        "--model",
        "gpt-4o",
        "--input-tokens",
        "1000",
        "--output-tokens",
        "500",
        "--provider",
        "openai",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data | {"pricing_version": "v"} == {
        "model": "gpt-4o",
        "provider": "openai",
        "status": "priced",
        "reason": None,
        "currency": "USD",
        "total": "0.0075",
        "input": "0.0025",
        "cache_read": "0",
        "cache_write": "0",
        "output": "0.005",
        "other": "0",
        "pricing_version": "v",
        "rule": "openai/gpt-4o",
    }


def test_price_table_with_every_option() -> None:
    code, out, err = run(
        "price",
        "--model",
        "claude-sonnet-4-5",
        "--input-tokens",
        "10000",
        "--cache-read-tokens",
        "4000",
        "--cache-write-tokens",
        "1000",
        "--cache-write-1h-tokens",
        "1000",
        "--output-tokens",
        "2000",
        "--reasoning-tokens",
        "500",
        "--at",
        "2025-11-01",
        "--tier",
        "batch",
        "--currency",
        "EUR",
    )
    assert (code, err) == (0, "")
    # list: 4000 x $3 + 4000 x $0.30 + 1000 x $3.75 + 1000 x $6 + 2000 x $15 per M = $0.05295;
    # batch 50 % → $0.026475; EUR at 0.853 → 0.022583175, shown to 8 places
    assert "  total              0.02258318 EUR" in out
    assert "anthropic/claude-sonnet-4-5" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["price", "--model", "gpt-4oo", "--input-tokens", "1"], "unknown model 'gpt-4oo'; closest known ids: gpt-4o"),
        (["price", "--model", "gpt-4o", "--input-tokens", "1.5"], "--input-tokens must be a whole number, got '1.5'"),
        (["price", "--model", "gpt-4o", "--output-tokens", "-3"], "--output-tokens must not be negative"),
        (["price", "--model", "gpt-4o", "--input-tokens", "9" * 13], "is beyond 1,000,000,000 tokens"),
        (["price", "--model", "gpt-4o", "--input-tokens", "10", "--cache-read-tokens", "20"], "exceed input_tokens"),
        (["price", "--model", "gpt-4o", "--at", "yesterday"], "--at must be a date or time like 2025-05-01"),
        (["price", "--model", "gpt-4o", "--currency", "XYZ"], "unknown currency 'XYZ'"),
        (["pricing", "list", "--provider", "nobody"], "unknown provider 'nobody'"),
        (["pricing", "show", "clod-3"], "unknown model 'clod-3'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


def test_unpriced_tier_exits_1() -> None:
    code, out, _ = run("price", "--model", "gpt-4o", "--input-tokens", "1", "--tier", "priority", "--at", "2024-01-01")
    assert code == 1
    assert "unpriced: no priority price" in out


def test_pricing_list_and_show() -> None:
    code, out, _ = run("pricing", "list", "--provider", "anthropic")
    assert code == 0
    assert "claude-sonnet-4-5" in out and "openai" not in out
    code, out, _ = run("pricing", "show", "o3")
    assert code == 0
    assert "[standard] from 2025-06-10" in out and "source: https://" in out


def test_pricing_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"providers": [{"id": "acme", "models": [{"id": "m", "prices": [{"input": "1"}]}]}]}')
    assert run("pricing", "validate", str(good))[:2] == (0, f"{good}: valid (1 providers, 1 models, 0 tenants)\n")
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{\n "providers": [\n  {"id": "acme", "models": [{"id": "m", "prices": [{"input": "cheap"}]}]}\n ]\n}'
    )
    code, _, err = run("pricing", "validate", str(bad))
    assert code == 1
    assert f"{bad}: line 3: providers.0.models.0.prices.0.input: " in err


def test_console_script_and_broken_pipe() -> None:
    exe = Path(sys.executable).parent / "costspan"
    proc = subprocess.run([str(exe), "pricing", "list"], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0 and proc.stdout.count("\n") > 1000
    shell = subprocess.run(
        f"'{exe}' pricing list | head -1", shell=True, capture_output=True, text=True, check=False, timeout=60
    )
    assert shell.stdout.startswith("provider") and "Traceback" not in shell.stderr


def test_pricing_demo_prints_the_cost_table() -> None:
    code, out, _ = run("demo", "--pricing-only")
    assert code == 0
    assert "acme" in out and "globex" in out and "total" in out
    assert "ollama/llama3.2" in out
