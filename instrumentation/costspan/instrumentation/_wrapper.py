"""The wrappers around ``Client.send`` / ``AsyncClient.send`` of httpx and httpx2.

The logic is written once (:meth:`SendWrapper._begin`, :meth:`SendWrapper._tap`); the sync and async
wrappers only differ in how they call the original and read the body. Every costspan step is guarded:
an internal error is reported and the request goes through unmodified; the caller's own exceptions
are re-raised unchanged; :class:`BudgetExceededError` from a pre-send hook reaches the caller.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.util.types import AttributeValue

from costspan.instrumentation import attributes as attr
from costspan.instrumentation._baggage import attribution_from_context
from costspan.instrumentation._hooks import BudgetExceededError, RequestInfo, RequestRewrite, passable
from costspan.instrumentation._providers import (
    RequestFacts,
    Route,
    apply_rewrite,
    dumps,
    parse_request,
    with_usage_requested,
)
from costspan.instrumentation._record import Call, peer_span_of
from costspan.instrumentation._runtime import Runtime
from costspan.instrumentation._stream import BodyTap

__all__ = ["SendWrapper"]

#: Set in the context while costspan handles a send, so nested sends are passed through.
_ACTIVE_KEY = context.create_key("costspan-instrumentation-active")


class _Prepared:
    __slots__ = ("call", "inject", "request", "want_stream")

    def __init__(self, call: Call, request: Any, want_stream: bool, inject: bool) -> None:
        self.call = call
        self.request = request
        self.want_stream = want_stream
        self.inject = inject


class SendWrapper:
    """wrapt wrappers for one HTTP library (httpx or httpx2)."""

    def __init__(self, rt: Runtime, lib: Any, source: str) -> None:
        self.rt = rt
        self.lib = lib
        self.source = source
        self._sync_stream, self._async_stream = _stream_types(lib)

    # --- shared logic --------------------------------------------------------------------------------
    def _begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Prepared | None:
        """Decide whether this send is an LLM call; if so run the hooks and start its record."""
        if not is_http_instrumentation_enabled() or context.get_value(_ACTIVE_KEY):
            return None
        try:
            request = args[0] if args else kwargs["request"]
            url = request.url
            route = self.rt.router.route(url.host, url.port, url.path)
            if route is None:
                return None
            try:
                content: bytes = request.content
            except Exception:  # a streaming request body: nothing to read without consuming it
                content = b""
            facts = parse_request(route, content, url.query.decode() if isinstance(url.query, bytes) else "")
            port = url.port or (443 if url.scheme == "https" else 80)
            attribution = attribution_from_context()
        except Exception as exc:
            self.rt.report("request", exc)
            return None

        extra: dict[str, AttributeValue] = {}
        # may raise BudgetExceededError, which goes to the caller
        rewrite = self._run_hooks(route=route, facts=facts, url=url, port=port, attribution=attribution)
        try:
            new_body = facts.body
            if rewrite is not None and rewrite.reservation_id:
                extra[attr.BUDGET_RESERVATION_ID] = rewrite.reservation_id
            if rewrite is not None and facts.body is not None and rewrite.changes:
                if rewrite.model is not None and rewrite.model != facts.model:
                    extra[attr.BUDGET_ORIGINAL_MODEL] = facts.model or ""
                    facts.model = rewrite.model
                if rewrite.max_tokens is not None and rewrite.max_tokens != facts.max_tokens:
                    if facts.max_tokens is not None:
                        extra[attr.BUDGET_ORIGINAL_MAX_TOKENS] = facts.max_tokens
                    facts.max_tokens = rewrite.max_tokens
                extra[attr.BUDGET_ACTION] = rewrite.reason or "rewrite"
                new_body = apply_rewrite(route, facts.body, rewrite.model, rewrite.max_tokens)
            inject = (
                self.rt.settings.inject_stream_usage
                and facts.stream
                and not facts.include_usage
                and route.family == "openai"
                and new_body is not None
            )
            if inject and new_body is not None:
                new_body = with_usage_requested(new_body)
            if new_body is not facts.body and new_body is not None:
                request = self._rebuild(request, dumps(new_body))
            call = Call(
                self.rt,
                route,
                request=facts,
                source=self.source,
                server_address=url.host,
                server_port=port,
                attribution=attribution,
                peer=peer_span_of(trace.get_current_span()),
                extra=extra,
            )
        except Exception as exc:
            self.rt.report("request", exc)
            return None
        want_stream = bool(kwargs.get("stream", False))
        return _Prepared(call, request, want_stream, bool(inject))

    def _run_hooks(
        self,
        *,
        route: Route,
        facts: RequestFacts,
        url: Any,
        port: int,
        attribution: dict[str, str],
    ) -> RequestRewrite | None:
        hooks = self.rt.hooks
        if not hooks:
            return None
        info = RequestInfo(
            provider=route.provider,
            operation=route.operation,
            model=facts.model,
            max_tokens=facts.max_tokens,
            stream=facts.stream,
            server_address=url.host,
            server_port=port,
            url_path=url.path,
            attribution=attribution,
            _estimate=lambda: self._estimate_input(facts),
        )
        rewrite: RequestRewrite | None = None
        for hook in list(hooks):
            try:
                result = hook(info)
            except BudgetExceededError as exc:
                self._record_block(route=route, facts=facts, url=url, port=port, attribution=attribution, exc=exc)
                blocked = passable(exc)
                if blocked is exc:
                    raise
                raise blocked from None
            except Exception as exc:
                self.rt.report("pre_send_hook", exc)
                continue
            if isinstance(result, RequestRewrite):
                rewrite = result if rewrite is None else rewrite.merged(result)
        return rewrite

    def _estimate_input(self, facts: RequestFacts) -> int:
        from costspan.instrumentation._facts import input_text

        text, messages = input_text(facts.body)
        return self.rt.tokens.count(text)[0] + 4 * messages

    def _record_block(
        self,
        *,
        route: Route,
        facts: RequestFacts,
        url: Any,
        port: int,
        attribution: dict[str, str],
        exc: BudgetExceededError,
    ) -> None:
        try:
            extra: dict[str, AttributeValue] = {attr.BUDGET_ACTION: "blocked"}
            if exc.budget_id:
                extra[attr.BUDGET_ID] = exc.budget_id
            peer = peer_span_of(trace.get_current_span())
            call = Call(
                self.rt,
                route,
                request=facts,
                source=self.source,
                server_address=url.host,
                server_port=port,
                attribution=attribution,
                peer=peer,
                extra=extra,
            )
            call.finish(None, None, exc)
        except Exception as err:
            self.rt.report("request", err)

    def _rebuild(self, request: Any, body: bytes) -> Any:
        headers = request.headers.copy()
        headers.pop("content-length", None)
        return self.lib.Request(
            request.method, request.url, headers=headers, content=body, extensions=request.extensions
        )

    def _tap(self, prep: _Prepared, response: Any, is_async: bool) -> None:
        """Put a BodyTap on the response's byte stream (or finish the record if that fails)."""
        call = prep.call
        status = response.status_code

        def on_done(tap: BodyTap, error: BaseException | None) -> None:
            call.finish(status, tap, error)

        try:
            headers = response.headers
            if response.is_stream_consumed:  # a transport that returned a response already read
                tap = BodyTap(call.route, headers.get("content-type", ""), "", False, on_done)
                tap.feed(response.content)
                tap.end_of_body()
                return
            encoding = headers.get("content-encoding", "")
            tap = BodyTap(call.route, headers.get("content-type", ""), encoding, prep.inject, on_done)
            if tap.filter_usage and encoding:
                del headers["content-encoding"]  # the tap hands on decoded bytes
                headers.pop("content-length", None)
            wrapper = self._async_stream if is_async else self._sync_stream
            response.stream = wrapper(response.stream, tap, self.rt)
            if prep.want_stream:  # a stream the app drops without closing still ends its record
                weakref.finalize(response, tap.finish, None).atexit = False
        except Exception as exc:
            self.rt.report("response", exc)
            call.finish(status, None, None)

    # --- the wrappers -------------------------------------------------------------------------------
    def sync_send(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        prep = self._begin(args, kwargs)
        if prep is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _with_request(args, kwargs, prep.request)
        call = prep.call
        token = context.attach(_call_context(call))
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.finish(None, None, exc)
            raise
        finally:
            context.detach(token)
        self._tap(prep, response, is_async=False)
        if not prep.want_stream:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response

    async def async_send(self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any) -> Any:
        prep = self._begin(args, kwargs)
        if prep is None:
            return await wrapped(*args, **kwargs)
        args, kwargs = _with_request(args, kwargs, prep.request)
        call = prep.call
        token = context.attach(_call_context(call))
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.finish(None, None, exc)
            raise
        finally:
            context.detach(token)
        self._tap(prep, response, is_async=True)
        if not prep.want_stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


def _with_request(
    args: tuple[Any, ...], kwargs: dict[str, Any], request: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The send arguments with ``request`` swapped in and the body always streamed (costspan reads it)."""
    kwargs = {**kwargs, "stream": True}
    if args:
        return (request, *args[1:]), kwargs
    kwargs["request"] = request
    return args, kwargs


def _call_context(call: Call) -> context.Context:
    ctx = context.set_value(_ACTIVE_KEY, True)
    if call.span is not None:
        ctx = trace.set_span_in_context(call.span, ctx)
    return ctx


class _Tapped:
    """What the sync and async byte-stream wrappers share; only their iteration differs (await)."""

    def __init__(self, inner: Any, tap: BodyTap, rt: Runtime) -> None:
        self._inner = inner
        self._tap = tap
        self._rt = rt

    def _broken(self, exc: Exception, chunk: bytes) -> bytes:
        """The tap failed on a chunk: count it once, stop tapping, pass the bytes on untouched."""
        self._rt.report("stream", exc)
        self._tap.broken = True
        return chunk

    def _stopped(self, exc: BaseException | None) -> None:
        self._tap.finish(exc)


def _stream_types(lib: Any) -> tuple[Any, Any]:
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
