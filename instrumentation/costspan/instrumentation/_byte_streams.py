"""The byte-stream wrappers that put a :class:`BodyTap` between a response's body and the application.

They subclass the HTTP library's own stream types (httpx checks ``isinstance``); the sync and async
ones share everything but their iteration (``await``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from costspan.instrumentation._runtime import Runtime
from costspan.instrumentation._stream import BodyTap

__all__ = ["stream_types"]


class _Tapped:
    """What the sync and async byte-stream wrappers share; only their iteration differs (await)."""

    def __init__(self, inner: Any, tap: BodyTap, rt: Runtime) -> None:
        self._inner = inner
        self._tap = tap
        self._rt = rt

    def _broken(self, exc: Exception, chunk: bytes) -> bytes:
        """The tap failed on a chunk: count it once, stop tapping, pass the bytes on untouched."""
        self._rt.report("stream", exc)
        self._tap.stop_watching()
        return chunk

    def _stopped(self, exc: BaseException | None) -> None:
        self._tap.finish(exc)


def stream_types(lib: Any) -> tuple[Any, Any]:
    """Byte-stream wrappers that subclass the library's own stream types (httpx checks isinstance)."""

    class TapStream(_Tapped, lib.SyncByteStream):  # type: ignore[misc]
        def __iter__(self) -> Iterator[bytes]:
            tap = self._tap
            try:
                for chunk in self._inner:
                    try:
                        out = tap.feed(chunk)
                    except Exception as exc:
                        out = self._broken(exc, chunk)
                    if out:
                        yield out
            except GeneratorExit:
                self._stopped(None)
                raise
            except BaseException as exc:
                self._stopped(exc)
                raise
            tail = tap.end_of_body()
            if tail:
                yield tail

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._stopped(None)

    class AsyncTapStream(_Tapped, lib.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            tap = self._tap
            try:
                async for chunk in self._inner:
                    try:
                        out = tap.feed(chunk)
                    except Exception as exc:
                        out = self._broken(exc, chunk)
                    if out:
                        yield out
            except GeneratorExit:
                self._stopped(None)
                raise
            except BaseException as exc:
                self._stopped(exc)
                raise
            tail = tap.end_of_body()
            if tail:
                yield tail

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._stopped(None)

    return TapStream, AsyncTapStream
