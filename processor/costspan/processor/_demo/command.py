"""``costspan demo``: the main job on embedded defaults.

It starts ``costspan serve`` (in this process) over one data dir, a fake LLM provider on 127.0.0.1,
and three demo services — real openai and anthropic SDK calls under ``opentelemetry-instrument`` —
for three tenants with budgets (one blocks, one degrades). It shows progress, prints the cost by
tenant and model, and the dashboard URL and key, then serves until Ctrl-C
(``--exit-after-workload`` stops instead). ``--pricing-only`` prices a realistic day of calls offline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from costspan.pricing import Pricer, TenantOverride, Usage, load_catalog
from costspan.pricing.cli import format_money
from costspan.processor._cli_base import add_data_dir_flag, resolve_data_dir

__all__ = ["DEMO_CALLS", "add_demo_command", "run_pricing_demo"]

# (tenant, service, provider, model, input, cached input, output, reasoning, tier, count)
DEMO_CALLS: tuple[tuple[str, str, str, str, int, int, int, int, str, int], ...] = (
    ("acme", "support-bot", "openai", "gpt-4o-2024-08-06", 1_800, 1_024, 350, 0, "standard", 1_200),
    ("acme", "support-bot", "anthropic", "claude-sonnet-4-5-20250929", 6_500, 5_000, 700, 0, "standard", 400),
    ("acme", "nightly-summaries", "openai", "gpt-4o-mini", 12_000, 0, 800, 0, "batch", 3_000),
    ("globex", "code-review", "openai", "o3", 9_000, 2_048, 4_000, 3_000, "standard", 150),
    (
        "globex",
        "code-review",
        "aws.bedrock",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        20_000,
        0,
        1_500,
        0,
        "standard",
        90,
    ),
    ("globex", "search", "gcp.gemini", "gemini-2.5-pro", 250_000, 0, 2_000, 0, "standard", 12),
    ("initech", "chat", "deepseek", "deepseek-chat", 2_000, 500, 600, 0, "standard", 2_500),
    ("initech", "chat", "groq", "llama-3.3-70b-versatile", 1_500, 0, 400, 0, "standard", 4_000),
    ("initech", "local-rag", "ollama", "llama3.2", 3_000, 0, 300, 0, "standard", 800),
)
SERVICES = ("support-bot", "code-review", "search")
_WORKLOAD = ("costspan.processor._demo.workload",)


def add_demo_command(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the demo on embedded defaults",
        description=(
            "Start costspan serve, a fake LLM provider and three demo services making real openai and "
            "anthropic SDK calls under opentelemetry-instrument for three tenants with budgets; show "
            "progress, print the cost by tenant and model and the dashboard URL, then serve until Ctrl-C. "
            "A second run adds to the data dir's earlier calls unless --fresh."
        ),
    )
    add_data_dir_flag(demo)
    demo.add_argument("--fresh", action="store_true", help="delete the data dir's earlier demo data first")
    demo.add_argument("--port", type=int, default=4318, help="port of costspan serve (0 picks a free one)")
    demo.add_argument("--calls", type=int, default=24, help="calls per demo service")
    demo.add_argument("--exit-after-workload", action="store_true", help="stop after printing the table")
    demo.add_argument("--pricing-only", action="store_true", help="price a day of calls offline, no server")
    demo.add_argument("--currency", default="USD")
    demo.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, out: TextIO) -> int:
    if args.pricing_only:
        return run_pricing_demo(out, currency=args.currency.upper())
    if args.calls < 1:
        print("costspan demo: --calls must be at least 1", file=sys.stderr)
        return 2
    from costspan.processor._demo.server import DemoServer

    data_dir = resolve_data_dir(args)
    try:
        previous = _prepare_data_dir(data_dir, fresh=args.fresh)
    except (OSError, ValueError) as exc:
        print(f"costspan demo: {exc}", file=sys.stderr)
        return 2
    if previous:
        out.write(f"costspan demo: adding to the previous run's data in {data_dir} (--fresh starts over)\n")
    server = DemoServer(data_dir, args.port)
    try:
        server.__enter__()
    except (OSError, RuntimeError) as exc:
        print(f"costspan demo: cannot serve on port {args.port} ({exc}); try --port 0", file=sys.stderr)
        return 1
    try:
        out.write(f"costspan serve: {server.url}  (data in {data_dir.resolve()})\n")
        for line in server.setup_lines:
            out.write(f"  {line}\n")
        progress = run_workload(server, args.calls, out)
        server.wait_for_records(progress.ok + progress.degraded + progress.blocked, timeout=60)
        print_cost_table(server, out)
        out.write(f"\nDashboard: {server.url}/dashboard#key={server.admin_key}\n")
        out.write(f"API key (admin): {server.admin_key}\nMetrics: {server.url}/metrics (with the key)\n")
        if not args.exit_after_workload:
            _serve_until_interrupted(out)
            out.write("\nstopping\n")
    finally:
        server.__exit__(None, None, None)
    return 0


#: Entries of which at least one is in any data dir costspan wrote (``--fresh`` deletes only such a dir).
_DATA_DIR_MARKS = ("ledger", "api-keys.json", "costspan.lock", "budgets")


def _prepare_data_dir(data_dir: Path, *, fresh: bool) -> bool:
    """With ``fresh``, delete what an earlier run left; returns whether earlier calls remain (are added to).

    Refuses (ValueError) to delete a directory that does not look like a costspan data dir, and
    (OSError) one that a running ``costspan serve`` holds.
    """
    ledger = data_dir / "ledger"
    had_calls = ledger.is_dir() and any(ledger.iterdir())
    if not fresh or not data_dir.exists():
        return had_calls
    if not data_dir.is_dir() or (any(data_dir.iterdir()) and not any((data_dir / m).exists() for m in _DATA_DIR_MARKS)):
        raise ValueError(
            f"--fresh: {data_dir} is not a costspan data dir; delete it yourself or pick another --data-dir"
        )
    from costspan.processor.store._files import DataDirLock, DataDirLockedError

    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except DataDirLockedError as exc:
        raise ValueError(f"--fresh: {data_dir} is in use ({exc})") from None
    lock.release()
    shutil.rmtree(data_dir)
    return False


def _serve_until_interrupted(out: TextIO) -> None:
    """Say so, then block until Ctrl-C or SIGTERM (the server runs on its own threads)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    out.write("Serving until Ctrl-C.\n")
    out.flush()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Progress:
    total: int
    ok: int = 0
    blocked: int = 0
    degraded: int = 0
    errors: int = 0
    by_tenant: Counter[str] = field(default_factory=Counter)
    error_messages: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Event = field(default_factory=threading.Event)  # set by each call that ends

    @property
    def done(self) -> int:
        return self.ok + self.blocked + self.degraded + self.errors

    def line(self) -> str:
        return (
            f"calls {self.done}/{self.total}  ok {self.ok}  degraded {self.degraded}  "
            f"blocked {self.blocked}  errors {self.errors}"
        )


def run_workload(server: Any, calls: int, out: TextIO) -> Progress:
    """Run the demo services under ``opentelemetry-instrument``; show progress as they go."""
    bin_dir = Path(sys.executable).parent
    progress = Progress(total=calls * len(SERVICES))
    procs = []
    for service in SERVICES:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            **server.app_environment(service),
        }
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "opentelemetry-instrument"),
                    str(bin_dir / "python"),
                    "-m",
                    *_WORKLOAD,
                    service,
                    str(calls),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    readers = [threading.Thread(target=_read_events, args=(p, progress), daemon=True) for p in procs]
    for r in readers:
        r.start()
    out.write(f"workload: {len(SERVICES)} services x {calls} calls through the openai and anthropic SDKs\n")
    shown = _show_progress(progress, readers, out)
    for p in procs:
        stderr = p.stderr.read() if p.stderr else ""
        if p.wait() != 0:
            out.write(f"\na demo service failed (exit {p.returncode}): {stderr[-2000:]}\n")
    if out.isatty():
        out.write(f"\r  {progress.line()}\033[K\n")
    elif progress.line() != shown:
        out.write(f"  {progress.line()}\n")
    for message in progress.error_messages[:5]:
        out.write(f"  {message}\n")
    return progress


def _show_progress(progress: Progress, readers: list[threading.Thread], out: TextIO) -> str:
    """Show the progress line as calls end: rewritten in place on a terminal, else one line per change
    (at most one every half second). Until the first call ends, say that the services are starting."""
    tty = out.isatty()
    shown, last_write = "", 0.0
    out.write(
        ("\r  " if tty else "  ")
        + "starting the demo services (loading the SDKs and tokenizer)"
        + ("" if tty else "\n")
    )
    out.flush()
    while any(r.is_alive() for r in readers):
        progress.changed.wait(0.2)
        with progress.lock:
            progress.changed.clear()
            line = progress.line() if progress.done else ""
        now = time.monotonic()
        if not line or line == shown or (not tty and now - last_write < 0.5):
            continue
        out.write(f"\r  {line}\033[K" if tty else f"  {line}\n")
        out.flush()
        shown, last_write = line, now
    return shown


def _read_events(proc: subprocess.Popen[str], progress: Progress) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        outcome = str(event.get("outcome", ""))
        with progress.lock:
            progress.by_tenant[str(event.get("tenant", ""))] += 1
            if outcome == "ok":
                progress.ok += 1
            elif outcome == "degraded":
                progress.degraded += 1
            elif outcome == "blocked":
                progress.blocked += 1
            else:
                progress.errors += 1
                progress.error_messages.append(outcome)
            progress.changed.set()


def print_cost_table(server: Any, out: TextIO) -> None:
    """Calls by tenant and model as the server stored them: how each ended (ok, degraded, blocked, error),
    tokens and cost. A row none of whose sent calls could be priced shows ``unpriced``, never 0."""
    from costspan.processor.store._sums import Sums

    rows = server.cost_by_tenant_and_model()
    out.write(
        f"\n{'tenant':<10} {'model':<36} {'calls':>6} {'ok':>5} {'degraded':>8} {'blocked':>7} {'error':>5}"
        f" {'tokens':>9} {'cost USD':>12}\n"
    )
    total = Sums()
    for tenant, model, a in rows:
        cost = a.priced_cost
        out.write(
            f"{tenant:<10} {model:<36} {a.calls:>6} {a.ok:>5} {a.degraded:>8} {a.blocked:>7} {a.errors:>5}"
            f" {a.tokens:>9,} {'unpriced' if cost is None else format_money(cost, 6):>12}\n"
        )
        total.merge(a, histogram=False)
    out.write(
        f"{'total':<10} {'':<36} {total.calls:>6} {total.ok:>5} {total.degraded:>8} {total.blocked:>7}"
        f" {total.errors:>5} {total.tokens:>9,} {format_money(total.cost, 6):>12}\n"
    )
    out.write(
        "degraded: a budget moved the call to a fallback model or capped its max_tokens, or its tokens were"
        " estimated, or it has no price; blocked: refused by a budget, never sent\n"
    )


def run_pricing_demo(out: TextIO, *, currency: str = "USD") -> int:
    # globex has negotiated 12 % off list prices: shown as a tenant override.
    pricer = Pricer(load_catalog(), tenant_overrides={"globex": TenantOverride(discount_percent=Decimal(12))})
    at = datetime(2025, 11, 3, 14, 0, tzinfo=UTC)
    by_tenant_model: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    calls: dict[tuple[str, str], int] = defaultdict(int)
    unpriced = 0
    total_calls = sum(c[-1] for c in DEMO_CALLS)
    out.write(f"costspan demo: pricing {total_calls:,} calls with catalog {pricer.catalog_version}\n")
    for tenant, _service, provider, model, inp, cached, output, reasoning, tier, count in DEMO_CALLS:
        usage = Usage(input_tokens=inp, cache_read_tokens=cached, output_tokens=output, reasoning_tokens=reasoning)
        result = pricer.price_call(model, usage, provider=provider, at=at, tier=tier, tenant=tenant, currency=currency)
        key = (tenant, f"{result.provider}/{result.model}" + (f" [{tier}]" if tier != "standard" else ""))
        calls[key] += count
        if result.total is None:
            unpriced += count
            continue
        by_tenant_model[key] += result.total * count
    out.write(f"\n{'tenant':<9} {'model':<62} {'calls':>7} {'cost ' + currency:>14}\n")
    for (tenant, model), cost in sorted(by_tenant_model.items(), key=lambda kv: (kv[0][0], -kv[1])):
        out.write(f"{tenant:<9} {model:<62} {calls[(tenant, model)]:>7,} {format_money(cost, 4):>14}\n")
    total = sum(by_tenant_model.values(), Decimal(0))
    out.write(f"{'total':<9} {'':<62} {sum(calls.values()):>7,} {format_money(total, 4):>14}\n")
    if unpriced:
        out.write(f"{unpriced} calls were unpriced\n")
    return 0
