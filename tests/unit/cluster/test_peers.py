"""Peers: URL checks, the peers file, and rendezvous ownership (stable, balanced, minimal movement)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from costspan.processor.cluster import Peers, parse_peer_urls, peers_from_settings, read_peers_file
from costspan.processor.serve._settings import load_settings

THREE = ("http://10.0.0.1:4318", "http://10.0.0.2:4318", "http://10.0.0.3:4318")
TENANTS = [f"tenant-{i}" for i in range(3000)]


def test_urls_are_normalised_and_deduplicated() -> None:
    assert parse_peer_urls([" http://a:1/ ", "https://b.example/base/", "http://a:1"]) == (
        "http://a:1",
        "https://b.example/base",
    )


@pytest.mark.parametrize("bad", ["ftp://a:1", "a:4318", "http://", "http://a:port", "http://a:1/?x=1", ""])
def test_bad_urls_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="peer URL"):
        parse_peer_urls([bad])


def test_peers_file_reads_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "peers"
    path.write_text("# the shards\nhttp://b:2/\n\n  http://a:1  # first\n", encoding="utf-8")
    assert read_peers_file(path) == ("http://b:2", "http://a:1")
    path.write_text("http://a:1\nnot a url\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_peers_file(path)
    with pytest.raises(ValueError, match="cannot be read"):
        read_peers_file(tmp_path / "missing")


def test_settings_from_flags_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTSPAN_PEERS", "http://10.0.0.2:4318/, http://10.0.0.1:4318")
    monkeypatch.setenv("COSTSPAN_NODE_URL", "http://10.0.0.1:4318/")
    settings = load_settings()
    assert settings.peers == ("http://10.0.0.2:4318", "http://10.0.0.1:4318")
    peers = peers_from_settings(settings)
    assert peers == Peers(self_url="http://10.0.0.1:4318", urls=("http://10.0.0.1:4318", "http://10.0.0.2:4318"))
    assert peers.others() == ("http://10.0.0.2:4318",) and not peers.single
    file = tmp_path / "peers.txt"
    file.write_text("http://10.0.0.3:4318\n", encoding="utf-8")
    assert Peers.from_settings(load_settings(peers_file=file)).urls == THREE


def test_settings_refuse_a_node_url_outside_the_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTSPAN_PEERS", raising=False)
    monkeypatch.delenv("COSTSPAN_NODE_URL", raising=False)
    with pytest.raises(ValidationError, match="not one of the peers"):
        load_settings(peers=",".join(THREE), node_url="http://10.0.0.9:4318")
    with pytest.raises(ValidationError, match="node_url is required"):
        load_settings(peers=",".join(THREE))
    with pytest.raises(ValidationError, match="peer URL"):
        load_settings(peers="10.0.0.1:4318", node_url="http://10.0.0.1:4318")


def test_no_peers_is_a_single_node_that_owns_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTSPAN_PEERS", raising=False)
    monkeypatch.delenv("COSTSPAN_NODE_URL", raising=False)
    peers = peers_from_settings(load_settings())
    assert peers.single and peers.others() == ()
    assert peers.owns("anyone") and peers.owner("anyone") == peers.self_url


def test_owner_is_stable_across_processes() -> None:
    peers = Peers(self_url=THREE[0], urls=THREE)
    here = [peers.owner(t) for t in TENANTS[:50]]
    code = (
        "from costspan.processor.cluster import Peers;"
        f"p = Peers(self_url={THREE[0]!r}, urls={THREE!r});"
        f"print(','.join(p.owner(f'tenant-{{i}}') for i in range(50)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip().split(",") == here
    # the order the URLs are given in and which node asks do not matter
    assert [Peers(self_url=THREE[2], urls=THREE[::-1]).owner(t) for t in TENANTS[:50]] == here


def test_ownership_is_balanced() -> None:
    counts = Counter(Peers(self_url=THREE[0], urls=THREE).owner(t) for t in TENANTS)
    assert set(counts) == set(THREE)
    assert all(abs(n - len(TENANTS) / 3) < len(TENANTS) * 0.05 for n in counts.values()), counts


def test_adding_a_peer_moves_only_the_tenants_it_wins() -> None:
    before = Peers(self_url=THREE[0], urls=THREE)
    fourth = "http://10.0.0.4:4318"
    after = Peers(self_url=THREE[0], urls=(*THREE, fourth))
    moved = [t for t in TENANTS if before.owner(t) != after.owner(t)]
    assert all(after.owner(t) == fourth for t in moved)
    assert abs(len(moved) - len(TENANTS) / 4) < len(TENANTS) * 0.05
    # and removing it puts them back where they were
    assert all(before.owner(t) == Peers(self_url=THREE[0], urls=THREE).owner(t) for t in moved)


def test_is_self_and_owns() -> None:
    peers = Peers(self_url=THREE[1], urls=THREE)
    assert peers.is_self(THREE[1] + "/") and not peers.is_self(THREE[0])
    assert {peers.owns(t) for t in TENANTS[:100]} == {True, False}
    assert all(peers.owns(t) == (peers.owner(t) == THREE[1]) for t in TENANTS[:100])
    with pytest.raises(ValueError, match="not one of the peers"):
        Peers(self_url="http://elsewhere:1", urls=THREE)


def test_serve_refuses_to_start_with_a_node_url_outside_the_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from costspan.processor.serve._serve_cli import main

    data = tmp_path / "data"
    flags = ["--data-dir", str(data), "--peers", "http://a:1,http://b:2", "--node-url", "http://c:1"]
    assert main(flags) == 2
    assert "node_url http://c:1 is not one of the peers http://a:1, http://b:2" in capsys.readouterr().err
    assert main(["--data-dir", str(data), "--peers-file", str(tmp_path / "missing")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert not data.exists()  # refused before anything was created


def test_the_peer_client_closes_twice_and_a_closed_client_is_a_failed_peer() -> None:
    import asyncio

    import httpx

    from costspan.processor.cluster._fanout import PeerClient

    peers = Peers(self_url="http://127.0.0.1:1", urls=("http://127.0.0.1:1", "http://127.0.0.1:2"))
    client = PeerClient(peers, "key", 0.5)

    async def run() -> None:
        await client.open()
        await client.close()
        await client.close()
        with pytest.raises(httpx.TransportError):
            await client.get("http://127.0.0.1:2", "/v1/usage", None)

    asyncio.run(run())
