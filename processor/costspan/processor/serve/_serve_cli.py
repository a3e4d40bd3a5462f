"""`costspan serve`: registered on the lead's CLI by :func:`add_serve_command`."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from costspan.processor._cli_base import add_data_dir_flag, data_dir_flag

if TYPE_CHECKING:
    from costspan.processor.serve._settings import Settings

__all__ = ["add_serve_command", "main", "run_serve"]

logger = logging.getLogger(__name__)


def add_serve_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``serve`` with its flags; the parser's ``handler`` returns an exit code."""
    parser = subparsers.add_parser(
        "serve",
        help="run the processor: OTLP receiver, ledger, rollups, /metrics",
        description=(
            "Receive OTLP/HTTP traces on /v1/traces and OTLP/gRPC on the gRPC port, price every LLM call, "
            "keep a durable ledger and rollups, and expose /metrics. Flags beat COSTSPAN_* environment "
            "variables, which beat the config file."
        ),
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 4318; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=int, help="OTLP/gRPC port on the same host (default 4317; 0: off)")
    add_data_dir_flag(parser)
    parser.add_argument("--config", type=Path, help="settings file (.toml or .json)")
    parser.add_argument("--fsync", choices=["always", "never"], help="ledger fsync policy (default always)")
    parser.add_argument("--max-body-bytes", type=int, help="OTLP body limit after decompression")
    parser.add_argument("--max-pending-records", type=int, help="ingest queue bound (503 beyond it)")
    parser.add_argument("--max-request-bytes", type=int, help="body limit of every other route (default 1 MiB)")
    parser.add_argument("--max-header-bytes", type=int, help="request line + headers limit (default 64 KiB)")
    parser.add_argument(
        "--ingest-workers", type=int, help="processes that decode and price OTLP bodies (0: in the server)"
    )
    parser.add_argument("--forward-endpoint", help="also send the enriched spans to this OTLP/HTTP URL")
    # cluster
    parser.add_argument("--peers", help="comma-separated base URLs of every instance, this one included")
    parser.add_argument("--peers-file", type=Path, help="file of peer base URLs, one a line (# comments)")
    parser.add_argument("--node-url", help="this instance's own base URL (one of the peers)")
    parser.add_argument("--peer-key", help="admin API key presented to peers (or COSTSPAN_PEER_KEY)")
    parser.add_argument("--peer-timeout", type=float, help="seconds to wait for a peer (default 2)")
    # spend leases
    parser.add_argument(
        "--lease-owner-down",
        choices=["closed", "open"],
        help="a global budget's owner unreachable and the lease spent: refuse calls (closed) or allow them",
    )
    parser.add_argument("--lease-ttl", type=float, help="seconds a global budget's spend lease lives (default 30)")
    parser.add_argument("--snapshot-interval-seconds", type=float, help="seconds between snapshots")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without API keys (only on a loopback address; for local trials)",
    )
    parser.add_argument(
        "--metrics-public",
        action="store_true",
        default=None,
        help="serve /metrics without a key (on a private network only; logged as a warning)",
    )
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Load settings, build the store and app, serve until SIGINT/SIGTERM. Returns an exit code.

    ``out`` receives the one start-up line; errors go to stderr.
    """
    from pydantic import ValidationError

    from costspan.processor.serve._settings import load_settings

    try:
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            grpc_port=getattr(args, "grpc_port", None),
            data_dir=data_dir_flag(args),
            fsync=args.fsync,
            max_body_bytes=args.max_body_bytes,
            max_pending_records=args.max_pending_records,
            max_request_bytes=getattr(args, "max_request_bytes", None),
            max_header_bytes=getattr(args, "max_header_bytes", None),
            metrics_public=getattr(args, "metrics_public", None),
            snapshot_interval_seconds=args.snapshot_interval_seconds,
            ingest_workers=args.ingest_workers,
            forward_endpoint=args.forward_endpoint,
            log_level=args.log_level,
            peers=getattr(args, "peers", None),
            peers_file=getattr(args, "peers_file", None),
            node_url=getattr(args, "node_url", None),
            peer_key=getattr(args, "peer_key", None),
            peer_timeout_seconds=getattr(args, "peer_timeout", None),
            lease_owner_down=getattr(args, "lease_owner_down", None),
            lease_ttl_seconds=getattr(args, "lease_ttl", None),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        print(f"costspan serve: bad setting: {problems}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"costspan serve: {exc}", file=sys.stderr)
        return 2

    from costspan.processor.store._files import DataDirLock, DataDirLockedError

    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except (DataDirLockedError, OSError) as exc:
        print(f"costspan serve: {exc}", file=sys.stderr)
        return 2
    try:
        return _serve_locked(settings, bool(getattr(args, "insecure_no_auth", False)), out)
    finally:
        lock.release()


def _serve_locked(settings: Settings, insecure_no_auth: bool, out: TextIO) -> int:
    """Serve with the data dir's lock held (by the caller)."""
    import uvicorn

    from costspan.processor.serve._http import server_config
    from costspan.processor.serve._server import build_server_app
    from costspan.processor.store._store import Store

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store(settings.store_config())
    try:
        app = build_server_app(settings, store, insecure_no_auth=insecure_no_auth)
    except ValueError as exc:
        print(f"costspan serve: {exc}", file=sys.stderr)
        return 2
    config = server_config(
        app,
        host=settings.host,
        port=settings.port,
        max_header_bytes=settings.max_header_bytes,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:  # e.g. the port is taken: said before anything claims to listen
        print(
            f"costspan serve: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr
        )
        store.close()
        return 1
    with sock:
        # the address the socket really has (--port 0: the port the system chose)
        grpc = f", OTLP/gRPC on port {settings.grpc_port}" if settings.grpc_port else ""
        out.write(f"costspan serve: listening on {address_url(sock)}{grpc}, data in {settings.data_dir}\n")
        out.flush()
        server.run(sockets=[sock])
    return 0 if server.started else 1


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6, as the host resolves). Raises OSError."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def address_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (an IPv6 host in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``serve`` alone: ``python -m costspan.processor.serve [flags]``."""
    from costspan.processor._cli_base import CliParser

    parser = CliParser(prog="costspan")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return run_serve(args)
