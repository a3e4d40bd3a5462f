"""The hot-path codecs: records to and from JSON (orjson with a fallback), ledger lines read in chunks."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costspan.processor.store import _ledger as ledger_module
from costspan.processor.store import _records as records_module
from costspan.processor.store._ledger import Ledger, LedgerLine, Position, encode_line
from costspan.processor.store._records import CallRecord, TokenCounts, record_from_json, record_to_json

_texts = st.text(max_size=12)
_money = st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-(10**6), max_value=10**6)
_counts = st.integers(min_value=0, max_value=2**40)


@st.composite
def call_records(draw: st.DrawFn) -> CallRecord:
    texts = [draw(_texts) for _ in range(17)]
    money = [draw(_money) for _ in range(6)]
    return CallRecord(
        trace_id=texts[0],
        span_id=texts[1],
        parent_span_id=texts[2],
        start_ns=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        end_ns=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        service=texts[3],
        tenant=texts[4],
        workflow=texts[5],
        user=texts[6],
        session=texts[7],
        provider=texts[8],
        model=texts[9],
        operation=texts[10],
        source=texts[11],
        tokens=TokenCounts(*(draw(_counts) for _ in range(6))),
        tokens_estimated=draw(st.booleans()),
        cost_status=draw(st.sampled_from(["priced", "estimated", "unpriced"])),
        unpriced_reason=texts[12],
        cost_total=money[0],
        cost_input=money[1],
        cost_output=money[2],
        cost_cache_read=money[3],
        cost_cache_write=money[4],
        cost_other=money[5],
        pricing_version=texts[13],
        error_type=texts[14],
        ttfc_s=draw(st.none() | st.floats(min_value=0, max_value=86399.9, allow_nan=False)),
        project=texts[15],
        reservation_id=texts[16],
    )


@settings(max_examples=300, deadline=None)
@given(call_records())
def test_orjson_and_the_hand_written_encoder_write_the_same_json_and_both_read_back(record: CallRecord) -> None:
    fast = record_to_json(record)
    text = records_module._record_to_json_text(record)
    assert json.loads(fast) == json.loads(text)
    assert record_from_json(fast) == record
    assert record_from_json(text.encode()) == record
    assert record_from_json(fast).tokens == record.tokens


def test_what_orjson_refuses_or_reads_differently_takes_the_standard_path() -> None:
    record = CallRecord(
        trace_id="t", span_id="s", parent_span_id="", start_ns=2**70, end_ns=2**70 + 1, service="svc",
        tenant="acme", workflow="", user="", session="", provider="openai", model="gpt-4o", operation="chat",
        source="scope", tokens=TokenCounts(1, 2), tokens_estimated=False, cost_status="unpriced",
        unpriced_reason="unknown model", cost_total=None, cost_input=None, cost_output=None,
        cost_cache_read=None, cost_cache_write=None, cost_other=None, pricing_version="", error_type="",
    )  # fmt: skip
    assert record_from_json(record_to_json(record)) == record
    lone = _raw(trace_id="\ud800")[:-3]  # an older record, without ttfc and project
    assert record_from_json(json.dumps(lone)).trace_id == "\ud800"  # json.loads takes it, as it always did
    short = json.dumps(_raw(tokens=[1, 2, 3]))
    assert record_from_json(short).tokens == TokenCounts(1, 2, 3)  # read as it always was: zeros after
    big = record_from_json(json.dumps(_raw(tokens=[10**12, 2, 0, 0, 0, 0], service=2**70, ttfc=1)))
    assert (big.tokens.input, big.ttfc_s) == (10**12, 1.0)  # the largest count, read on the standard path
    with pytest.raises(ValueError, match="token count out of range"):  # an older version stored it: not read
        record_from_json(json.dumps(_raw(tokens=[2**65, 2, 0, 0, 0, 0], ttfc=1)))
    assert record_from_json(json.dumps(_raw(service=2**70))).service == str(2**70)
    assert record_from_json(json.dumps(_raw(service=-(2**63) - 1)).encode()).service == str(-(2**63) - 1)
    assert record_from_json(json.dumps(_raw(service=2**64 - 1)).encode()).service == str(2**64 - 1)


def _raw(
    trace_id: str = "t", tokens: object = (1, 2, 0, 0, 0, 0), ttfc: object = None, service: object = "svc"
) -> list[object]:
    """A record as stored, with one field chosen."""
    strings = [service, "acme", "wf", "u", "", "openai", "gpt-4o", "chat", "scope"]
    money = ["0.5", "0.25", "0.25", "0", "0", "0"]
    return [1, trace_id, "s", "", 1, 2, *strings, tokens, False, "priced", "", *money, "v", "", ttfc, "", ""]


@pytest.mark.parametrize(
    "payload",
    [
        b"[2]",
        b"{}",
        b"[]",
        b"not json",
        b'[1,"too","short"]',
        json.dumps(_raw(tokens=[1, 2, 3, 4, 5, 6, 7])),
        json.dumps(_raw(tokens="many")),
        json.dumps(_raw()).replace('"0.5"', '"not money"'),
        json.dumps(_raw()).replace('"s", "", 1, 2', '"s", "", "one", 2'),
    ],
)
def test_a_malformed_record_raises_value_or_type_error(payload: bytes | str) -> None:
    with pytest.raises((ValueError, TypeError, ArithmeticError)):  # decimal.InvalidOperation, as before
        record_from_json(payload)


def test_older_records_without_ttfc_or_project_read_as_before() -> None:
    current = _raw(ttfc=0.5)
    current[-2:] = ["proj", "res-1"]
    assert record_from_json(json.dumps(current)).project == "proj"
    before_project = record_from_json(json.dumps(current[:-2]))
    assert (before_project.ttfc_s, before_project.project, before_project.reservation_id) == (0.5, "", "")
    before_ttfc = record_from_json(json.dumps(current[:-3]))
    assert (before_ttfc.ttfc_s, before_ttfc.cost_total) == (None, Decimal("0.5"))


def _write(directory: Path, lines: list[bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "segment-00000001.log").write_bytes(b"".join(lines))
    (directory / "segment-00000002.log").write_bytes(b"".join(lines[:2]))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_reading_in_chunks_of_any_size_gives_the_same_lines_positions_and_corrupt_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    lines = [encode_line(f"{i:048x}", 10**18 + i, json.dumps({"i": i, "pad": "x" * i})) for i in range(12)]
    lines[5] = lines[5].replace(b'"pad"', b'"paD"')  # the checksum no longer matches
    lines.append(lines[3][:-9])  # a torn last line: no newline
    _write(tmp_path / "ledger", lines)

    monkeypatch.setattr(ledger_module, "_READ_CHUNK", chunk)
    reader = Ledger(tmp_path / "ledger", fsync="never")
    got = list(reader.read())

    expected: list[LedgerLine] = []
    for segment, written in ((1, lines), (2, lines[:2])):
        offset = 0
        for i, raw in enumerate(written):
            offset += len(raw)
            if raw.endswith(b"\n") and not (segment == 1 and i == 5):
                payload = raw.split(b" ", 3)[3][:-1]
                expected.append(LedgerLine(f"{i:048x}", 10**18 + i, payload, Position(segment, offset)))
    assert got == expected
    assert reader.corrupt_lines == 1
    # reading on from a position gives the rest
    assert list(Ledger(tmp_path / "ledger").read(got[3].end)) == got[4:]
