"""count_tokens: exact OpenAI chat framing and vision tokens, images sized from their own headers."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from costspan.instrumentation._tokens import load_encoding
from costspan.track import TokenCount, count_tokens
from costspan.track._images import image_size, openai_tiles


def png(width: int, height: int) -> str:
    head = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x06\0\0\0"
    )
    return "data:image/png;base64," + base64.b64encode(head + b"\0" * 32).decode()


def jpeg(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\x01\x01\0\0\x01\0\x01\0\0"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\0"
    return base64.b64encode(b"\xff\xd8" + app0 + sof + b"\xff\xd9").decode()


def gif(width: int, height: int) -> str:
    return (
        "data:image/gif;base64," + base64.b64encode(b"GIF89a" + struct.pack("<HH", width, height) + b"\0" * 8).decode()
    )


def webp(width: int, height: int) -> str:
    body = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\0\0\0\0"
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    return "data:image/webp;base64," + base64.b64encode(b"RIFF" + struct.pack("<I", 30) + b"WEBP" + body).decode()


def image(url: str, detail: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"url": url}
    if detail is not None:
        spec["detail"] = detail
    return {"role": "user", "content": [{"type": "image_url", "image_url": spec}]}


@pytest.mark.parametrize(
    ("encoded", "size"),
    [
        (png(1024, 768), (1024, 768)),
        (jpeg(640, 480), (640, 480)),
        (gif(31, 7), (31, 7)),
        (webp(4000, 3000), (4000, 3000)),
    ],
)
def test_image_size_from_headers(encoded: str, size: tuple[int, int]) -> None:
    assert image_size(encoded) == size


@pytest.mark.parametrize("bad", ["https://example.com/a.png", "data:image/png,raw", "bm90IGFuIGltYWdl", ""])
def test_image_size_unknown(bad: str) -> None:
    assert image_size(bad) is None


@pytest.mark.parametrize(
    ("size", "tiles"),
    [((512, 512), 1), ((1024, 1024), 4), ((2048, 4096), 6), ((4096, 8192), 6), ((100, 3000), 4), ((768, 768), 4)],
)
def test_high_detail_tiles(size: tuple[int, int], tiles: int) -> None:
    assert openai_tiles(*size) == tiles


# one image message: 3 (message) + "user" (1) + the image + 3 (reply priming) = image + 7
@pytest.mark.parametrize(
    ("model", "url", "detail", "tokens", "estimated"),
    [
        ("gpt-4o", png(1024, 1024), "high", 765, False),  # 85 + 170 × 4
        ("gpt-4o", png(2048, 4096), None, 1105, False),  # auto counts as high: 85 + 170 × 6
        ("gpt-4o", png(4000, 3000), "low", 85, False),
        ("gpt-4.1", png(512, 512), "high", 255, False),  # 85 + 170
        ("gpt-4o-mini", png(512, 512), "low", 2833, False),
        ("gpt-4o-mini", png(1024, 1024), "high", 2833 + 5667 * 4, False),
        ("o3", png(512, 512), "high", 225, False),  # 75 + 150
        ("gpt-4o", "https://example.com/cat.png", "high", 85 + 170 * 8, True),  # size unknown: the most
        ("gpt-4o", "https://example.com/cat.png", "low", 85, False),
    ],
)
def test_openai_image_tokens(model: str, url: str, detail: str | None, tokens: int, estimated: bool) -> None:
    count = count_tokens(model, [image(url, detail)])
    assert (count.images, count.total, count.estimated) == (tokens, tokens + 7, estimated)


def test_text_system_and_names_follow_the_chat_framing() -> None:
    enc = load_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "name": "ada", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    count = count_tokens("gpt-4o", messages)

    def n(text: str) -> int:
        return len(enc.encode_ordinary(text))

    system = n("You are a terse assistant.")
    text = n("system") + n("user") + n("ada") + n("What is 2 + 2?") + n("assistant") + n("4")
    assert count == TokenCount(
        total=system + text + 3 * 3 + 1 + 3,
        text=text,
        system=system,
        tools=0,
        images=0,
        overhead=13,
        estimated=False,
        estimator="tiktoken:o200k_base",
    )
    assert int(count) == count.total
    cl100k = load_encoding("cl100k_base")
    assert count_tokens("gpt-4", "Hello there").total == len(cl100k.encode_ordinary("Hello there"))


def test_tools_are_counted_and_marked_estimated() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    plain = count_tokens("gpt-4o", [{"role": "user", "content": "hi"}])
    with_tools = count_tokens("gpt-4o", [{"role": "user", "content": "hi"}], tools=tools)
    assert with_tools.tools > 0 and with_tools.total == plain.total + with_tools.tools
    assert not plain.estimated and with_tools.estimated


def test_anthropic_counts_lean_high_with_images_and_system() -> None:
    enc = load_encoding("o200k_base")
    data = png(1000, 1000).split(",", 1)[1]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this picture"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
            ],
        }
    ]
    count = count_tokens("claude-sonnet-4-5", messages, system="Be brief")
    assert count.images == 1334  # ceil(1000 × 1000 / 750)
    assert count.system == -(-len(enc.encode_ordinary("Be brief")) * 135 // 100)
    assert count.estimated and count.estimator == "tiktoken:o200k_base*1.35"
    big = count_tokens(
        "claude-sonnet-4-5",
        [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}],
    )
    assert big.images == 1600 and big.estimated


@pytest.mark.parametrize(("model", "messages"), [("", []), (None, []), ("gpt-4o", [1, 2]), ("gpt-4o", 42)])
def test_bad_input_is_a_clear_error(model: Any, messages: Any) -> None:
    with pytest.raises(ValueError, match=r"model|messages"):
        count_tokens(model, messages)


def test_the_mdmai_argument_order_counts_the_same() -> None:
    messages: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    ours = count_tokens("gpt-4o", messages)
    assert count_tokens(messages, "openai", "gpt-4o") == ours  # count_tokens(messages, provider, model)
    assert count_tokens(messages=messages, provider="openai", model="gpt-4o") == ours
    with pytest.raises(ValueError, match="count_tokens"):
        count_tokens("gpt-4o", messages, "gpt-4o")  # neither order
