"""The instances of one deployment and which of them owns a tenant (rendezvous hashing)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

__all__ = ["Peers", "all_peer_urls", "parse_peer_urls", "peers_from_settings", "read_peers_file"]


class PeerSettings(Protocol):
    """What :func:`peers_from_settings` reads of ``costspan serve``'s ``Settings``."""

    @property
    def peers(self) -> tuple[str, ...]: ...
    @property
    def peers_file(self) -> Path | None: ...
    @property
    def node_url(self) -> str | None: ...


def parse_peer_urls(urls: Iterable[str | None]) -> tuple[str, ...]:
    """Base URLs checked and normalised (no trailing ``/``), in the order given, duplicates dropped.

    Raises ``ValueError`` naming the first URL that is not ``http(s)://host[:port][/path]``.
    """
    seen: dict[str, None] = {}
    for raw in urls:
        url = (raw or "").strip().rstrip("/")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise ValueError(f"peer URL {raw!r} is not valid: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"peer URL {raw!r} must be an http:// or https:// base URL such as http://10.0.0.2:4318")
        if parts.query or parts.fragment:
            raise ValueError(f"peer URL {raw!r} must not have a query or fragment")
        seen[url] = None
    return tuple(seen)


def read_peers_file(path: Path) -> tuple[str, ...]:
    """Peer URLs from ``path``: one a line, blank lines and ``#`` comments ignored.

    Raises ``ValueError`` for a missing/unreadable file or a bad URL (with its line number).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"peers file {path} cannot be read: {exc}") from None
    urls: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        url = line.split("#", 1)[0].strip()
        if not url:
            continue
        try:
            urls.extend(parse_peer_urls([url]))
        except ValueError as exc:
            raise ValueError(f"peers file {path} line {number}: {exc}") from None
    return parse_peer_urls(urls)


def all_peer_urls(peers: Iterable[str], peers_file: Path | None) -> tuple[str, ...]:
    """``peers`` joined with the URLs of ``peers_file`` (if any), sorted, without duplicates."""
    urls = parse_peer_urls(peers)
    if peers_file is not None:
        urls = parse_peer_urls([*urls, *read_peers_file(peers_file)])
    return tuple(sorted(urls))


def _weight(key: str, url: str) -> int:
    digest = hashlib.blake2b(f"{url}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class Peers:
    """This instance (``self_url``) and every instance of the deployment (``urls``: sorted, self included).

    A single node has ``urls == (self_url,)``; its ``self_url`` may be empty when no ``node_url`` is set.
    """

    self_url: str
    urls: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.urls and self.self_url not in self.urls:
            raise ValueError(f"node URL {self.self_url} is not one of the peers {', '.join(self.urls)}")
        if tuple(sorted(set(self.urls))) != self.urls:
            object.__setattr__(self, "urls", tuple(sorted(set(self.urls))))

    @classmethod
    def alone(cls, self_url: str = "") -> Peers:
        """A single node: it owns everything."""
        return cls(self_url=self_url, urls=(self_url,))

    @classmethod
    def from_settings(cls, settings: PeerSettings) -> Peers:
        return peers_from_settings(settings)

    @property
    def single(self) -> bool:
        """True when there are no other instances."""
        return len(self.urls) <= 1

    def owner(self, key: str) -> str:
        """The URL of the instance that owns ``key`` (a tenant id): highest random weight wins.

        Stable across processes and runs; adding an instance moves only the keys it now wins.
        """
        if self.single:
            return self.self_url
        return max(self.urls, key=lambda url: (_weight(key, url), url))

    def is_self(self, url: str) -> bool:
        return url.rstrip("/") == self.self_url

    def owns(self, key: str) -> bool:
        """True when this instance owns ``key``."""
        return self.single or self.owner(key) == self.self_url

    def others(self) -> tuple[str, ...]:
        """Every instance but this one, sorted."""
        return tuple(url for url in self.urls if url != self.self_url)


def peers_from_settings(settings: PeerSettings) -> Peers:
    """The ``Peers`` that ``settings`` describe (settings validation has already checked them)."""
    urls = all_peer_urls(settings.peers, settings.peers_file)
    if not urls:
        return Peers.alone(settings.node_url or "")
    return Peers(self_url=settings.node_url or "", urls=urls)
