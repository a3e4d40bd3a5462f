"""What an image in a prompt costs in input tokens, by the providers' published vision rules.

OpenAI (chat completions, responses): ``detail: low`` is a flat base; ``high`` (and ``auto``, counted
as high: a budget's estimate leans high) scales the image to fit 2048×2048, then its shortest side to
768, and bills ``base + per_tile × tiles`` for its 512-pixel tiles. The base and tile prices are 85 and
170 for GPT-4o, GPT-4.1 and GPT-4-vision; other models publish other figures (see ``_OPENAI_RATES``).
Anthropic: about ``width × height / 750`` after scaling the long edge to at most 1568 pixels.

The size is read from the image itself when the prompt carries it (a ``data:`` URL or base64 source:
PNG, JPEG, GIF, WebP headers). A remote URL's size is unknown offline: it is counted as the largest
image the rules allow (OpenAI high detail: 2048×768 → 8 tiles; Anthropic: 1568×1568 scaled → 1600),
and the count is marked estimated.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Final

__all__ = ["anthropic_image_tokens", "image_size", "openai_image_tokens"]

#: model name prefix → (base tokens, tokens per 512-px tile); first match wins, longest prefixes first
_OPENAI_RATES: Final[tuple[tuple[str, tuple[int, int]], ...]] = (
    ("gpt-4o-mini", (2833, 5667)),
    ("o1", (75, 150)),
    ("o3", (75, 150)),
    ("o4", (75, 150)),
)
_DEFAULT_RATE: Final = (85, 170)
#: the largest high-detail image: fits 2048 on its long side and 768 on its short side → 4 × 2 tiles
_MAX_TILES: Final = 8
_ANTHROPIC_UNKNOWN: Final = 1600
_ANTHROPIC_LONG_EDGE: Final = 1568


def _rate(model: str) -> tuple[int, int]:
    name = model.lower().rsplit("/", 1)[-1]
    for prefix, rate in _OPENAI_RATES:
        if name.startswith(prefix):
            return rate
    return _DEFAULT_RATE


def openai_tiles(width: int, height: int) -> int:
    """The 512-px tiles of a high-detail image of ``width`` × ``height`` pixels."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return math.ceil(w / 512) * math.ceil(h / 512)


def openai_image_tokens(model: str, detail: str, size: tuple[int, int] | None) -> tuple[int, bool]:
    """(input tokens, estimated) of one image part of an OpenAI request."""
    base, per_tile = _rate(model)
    if detail == "low":
        return base, False
    if size is None:
        return base + per_tile * _MAX_TILES, True
    return base + per_tile * openai_tiles(*size), False


def anthropic_image_tokens(size: tuple[int, int] | None) -> tuple[int, bool]:
    """(input tokens, estimated) of one image block of an Anthropic request (always an estimate)."""
    if size is None:
        return _ANTHROPIC_UNKNOWN, True
    w, h = size
    if max(w, h) > _ANTHROPIC_LONG_EDGE:
        scale = _ANTHROPIC_LONG_EDGE / max(w, h)
        w, h = round(w * scale), round(h * scale)
    return max(1, math.ceil(w * h / 750)), True


def image_size(data: str) -> tuple[int, int] | None:
    """(width, height) of a base64 image or a ``data:`` URL of one; None for anything else."""
    if data.startswith("data:"):
        comma = data.find(",")
        if comma < 0 or ";base64" not in data[:comma]:
            return None
        data = data[comma + 1 :]
    try:
        head = base64.b64decode(data[:65536].strip() + "=" * (-len(data[:65536].strip()) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    return _size_of(head)


def _size_of(b: bytes) -> tuple[int, int] | None:
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
            w, h = struct.unpack(">II", b[16:24])
            return int(w), int(h)
        if b[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", b[6:10])
            return int(w), int(h)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            return _webp(b)
        if b[:2] == b"\xff\xd8":
            return _jpeg(b)
    except struct.error:
        return None
    return None


def _webp(b: bytes) -> tuple[int, int] | None:
    chunk = b[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(b[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            i += 1
            continue
        marker = b[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", b[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None
