"""Exactly one record per LLM call.

Two kinds of duplicates are dropped:

* the same span twice (an exporter's retry, a replayed batch): its trace id + span id was seen within
  the dedupe window (:class:`~costspan.processor.store._window.DedupeWindow`: the last N hours of
  arrival; a span sent again after the window has passed is stored again);
* two spans for one call — e.g. the anthropic SDK's own span and a wrapper's span around it, or
  OpenLLMetry and openai-v2 both instrumenting one method. The rule: when a GenAI call span and its
  direct parent (same trace) are both call spans with the same usage (input and output tokens), they
  describe one call and one record is kept. Within one export batch the span costspan marked
  (``costspan.record.source`` or ``costspan.enriched``) wins; otherwise the innermost (the child)
  wins. Across batches the span that arrived first wins (children usually end, and so are exported,
  first). A bounded index of recent call spans is kept for the cross-batch check.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from costspan.processor.store._batch import CallKey
from costspan.processor.store._window import DedupeWindow, compact_key

__all__ = ["DedupeResult", "Deduplicator", "PendingCalls"]


@dataclass(frozen=True, slots=True)
class DedupeResult:
    kept: list[int]  # indices into the batch, in order
    dropped: list[int]
    duplicate_spans: int
    duplicate_calls: int


class Deduplicator:
    """Not thread-safe: the store's single writer owns it."""

    def __init__(self, *, recent_capacity: int = 50_000, window_hours: int = 6) -> None:
        if recent_capacity < 1:
            raise ValueError("recent_capacity must be at least 1")
        self._capacity = recent_capacity
        self.seen = DedupeWindow(window_hours)
        # recent call spans: key -> (parent key, usage fingerprint); parent key -> child fingerprint
        # an OrderedDict: popping the oldest is O(1) (a plain dict's ``next(iter())`` degrades as
        # deleted slots pile up at its front)
        self._recent: OrderedDict[str, tuple[str, tuple[int, int]]] = OrderedDict()
        self._children: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.seen)

    def mark_seen(self, key: str) -> None:
        self.seen.add(compact_key(key))

    def remember(self, call: CallKey) -> None:
        """Record a stored call (at replay, or once kept)."""
        self.seen.add(call.compact)
        self._recent[call.key] = (call.parent_key, call.fingerprint)
        if call.parent_key:
            self._children[call.parent_key] = call.fingerprint
        if len(self._recent) > self._capacity:
            _, (parent_key, _) = self._recent.popitem(last=False)
            if parent_key:
                self._children.pop(parent_key, None)

    def filter(self, calls: list[CallKey], pending: PendingCalls | None = None) -> DedupeResult:
        """Which of ``calls`` to store; does not remember them (the caller does once they are durable).

        ``pending`` holds the calls kept from the earlier batches of the same group commit (not yet
        durable, so not yet remembered): a span sent twice in one group is still stored once. The calls
        this batch keeps are added to it.
        """
        duplicate_spans = 0
        batch: dict[str, int] = {}
        dropped_spans: list[int] = []
        seen = self.seen.keys
        # the earlier batches of the group: checked only when there are some (most commits hold one batch)
        pending_keys = pending.keys if pending is not None and pending.keys else None
        pending_children = pending.children if pending is not None and pending.keys else None
        for i, call in enumerate(calls):
            key = call.key
            if key in batch or call.compact in seen or (pending_keys is not None and key in pending_keys):
                duplicate_spans += 1
                dropped_spans.append(i)
            else:
                batch[key] = i
        dropped: set[str] = set()
        for call_index in batch.values():
            call = calls[call_index]
            if not call.parent_key:
                continue
            parent_index = batch.get(call.parent_key)
            if parent_index is None:
                continue
            parent = calls[parent_index]
            if parent.fingerprint != call.fingerprint:
                continue
            loser = call if parent.preferred and not call.preferred else parent
            dropped.add(loser.key)
        kept: list[int] = []
        dropped_calls: list[int] = []
        for key, i in batch.items():
            call = calls[i]
            fp = call.fingerprint
            if key in dropped:
                dropped_calls.append(i)
                continue
            recent = self._recent.get(call.parent_key) if call.parent_key else None
            duplicate = (recent is not None and recent[1] == fp) or self._children.get(key) == fp
            if not duplicate and pending_keys is not None and pending_children is not None:
                duplicate = pending_keys.get(call.parent_key) == fp or pending_children.get(key) == fp
            if duplicate:
                dropped.add(key)
                dropped_calls.append(i)
            else:
                kept.append(i)
        for key in dropped:
            self.seen.add(compact_key(key))  # rare: a call stored under another span's id
        if pending is not None:
            pending.add(calls[i] for i in kept)
        return DedupeResult(kept, sorted(dropped_spans + dropped_calls), duplicate_spans, len(dropped_calls))


class PendingCalls:
    """The calls kept by the earlier batches of one group commit: key -> usage, parent key -> child's usage."""

    __slots__ = ("children", "keys")

    def __init__(self) -> None:
        self.keys: dict[str, tuple[int, int]] = {}
        self.children: dict[str, tuple[int, int]] = {}

    def add(self, calls: Iterable[CallKey]) -> None:
        for call in calls:
            self.keys[call.key] = call.fingerprint
            if call.parent_key:
                self.children[call.parent_key] = call.fingerprint
