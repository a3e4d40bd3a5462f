"""Scale-out: the peers of a deployment, tenant ownership, cross-shard admin queries (docs/scale-out.md)."""

from costspan.processor.cluster._peers import Peers, parse_peer_urls, peers_from_settings, read_peers_file

__all__ = ["Peers", "parse_peer_urls", "peers_from_settings", "read_peers_file"]
