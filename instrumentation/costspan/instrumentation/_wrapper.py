"""The wrappers around ``Client.send`` / ``AsyncClient.send`` of httpx and httpx2.

The logic is written once (:meth:`SendWrapper._begin`, :meth:`SendWrapper._tap`); the sync and async
wrappers only differ in how they call the original and read the body. Every costspan step is guarded:
an internal error is reported and the request goes through unmodified; the caller's own exceptions
are re-raised unchanged; :class:`BudgetExceededError` from a pre-send hook reaches the caller.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.util.types import AttributeValue

from costspan.instrumentation import attributes as attr
from costspan.instrumentation._baggage import attribution_from_context
from costspan.instrumentation._byte_streams import stream_types
from costspan.instrumentation._hooks import BudgetExceededError, RequestInfo, RequestRewrite, passable
from costspan.instrumentation._providers import (
    RequestFacts,
    Route,
    apply_rewrite,
    dumps,
    parse_request,
    tool_count,
    with_usage_requested,
)
from costspan.instrumentation._record import Call, peer_span_of
from costspan.instrumentation._runtime import Runtime
from costspan.instrumentation._stream import BodyTap

__all__ = ["SendWrapper"]

#: Set in the context while costspan handles a send, so nested sends are passed through.
_ACTIVE_KEY = context.create_key("costspan-instrumentation-active")


class _Prepared:
    __slots__ = ("call", "ctx", "inject", "request", "want_stream")

    def __init__(self, call: Call, request: Any, want_stream: bool, inject: bool, ctx: context.Context) -> None:
        self.call = call
        self.request = request
        self.want_stream = want_stream
        self.inject = inject
        self.ctx = ctx  # the context the send was made in


class SendWrapper:
    """wrapt wrappers for one HTTP library (httpx or httpx2)."""

    def __init__(self, rt: Runtime, lib: Any, source: str) -> None:
        self.rt = rt
        self.lib = lib
        self.source = source
        self._sync_stream, self._async_stream = stream_types(lib)

    # --- shared logic --------------------------------------------------------------------------------
    def _begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Prepared | None:
        """Decide whether this send is an LLM call; if so run the hooks and start its record."""
        if not is_http_instrumentation_enabled():
            return None
        ctx = context.get_current()  # looked up once, handed to everything below that reads it
        if context.get_value(_ACTIVE_KEY, ctx):
            return None
        try:
            request = args[0] if args else kwargs["request"]
            url = request.url
            host = url.host
            explicit_port = url.port
            route = self.rt.router.route(host, explicit_port, url.path)
            if route is None:
                return None
            try:
                content: bytes = request.content
            except Exception:  # a streaming request body: nothing to read without consuming it
                content = b""
            facts = parse_request(route, content)
            port = explicit_port or (443 if url.scheme == "https" else 80)
            attribution = attribution_from_context(ctx)
        except Exception as exc:
            self.rt.report("request", exc)
            return None

        extra: dict[str, AttributeValue] = {}
        # may raise BudgetExceededError, which goes to the caller
        rewrite = (
            self._run_hooks(route=route, facts=facts, url=url, port=port, attribution=attribution)
            if self.rt.hooks
            else None
        )
        try:
            new_body = facts.body
            if rewrite is not None:
                if rewrite.reservation_id:
                    extra[attr.BUDGET_RESERVATION_ID] = rewrite.reservation_id
                if facts.body is not None and rewrite.changes:
                    if rewrite.model is not None and rewrite.model != facts.model:
                        extra[attr.BUDGET_ORIGINAL_MODEL] = facts.model or ""
                        facts.model = rewrite.model
                    if rewrite.max_tokens is not None and rewrite.max_tokens != facts.max_tokens:
                        if facts.max_tokens is not None:
                            extra[attr.BUDGET_ORIGINAL_MAX_TOKENS] = facts.max_tokens
                        facts.max_tokens = rewrite.max_tokens
                    if rewrite.disable_tools:
                        removed = tool_count(route, facts.body)
                        if removed:
                            extra[attr.BUDGET_TOOLS_REMOVED] = removed
                    if rewrite.temperature is not None and rewrite.temperature != facts.temperature:
                        if facts.temperature is not None:
                            extra[attr.BUDGET_ORIGINAL_TEMPERATURE] = facts.temperature
                        facts.temperature = rewrite.temperature
                    extra[attr.BUDGET_ACTION] = rewrite.reason or "rewrite"
                    new_body = apply_rewrite(
                        route,
                        facts.body,
                        rewrite.model,
                        rewrite.max_tokens,
                        disable_tools=rewrite.disable_tools,
                        temperature=rewrite.temperature,
                    )
            inject = (
                facts.stream
                and not facts.include_usage
                and route.family == "openai"
                and new_body is not None
                and self.rt.settings.inject_stream_usage
            )
            spliced = None
            if inject and new_body is not None:
                if new_body is facts.body and "stream_options" not in new_body:
                    spliced = _usage_requested_bytes(content)  # the caller's bytes, one key added
                if spliced is None:
                    new_body = with_usage_requested(new_body)
            if spliced is not None:
                request = self._rebuild(request, spliced)
            elif new_body is not facts.body and new_body is not None:
                request = self._rebuild(request, dumps(new_body))
            call = Call(
                self.rt,
                route,
                request=facts,
                source=self.source,
                server_address=host,
                server_port=port,
                attribution=attribution,
                peer=peer_span_of(trace.get_current_span(ctx)),
                extra=extra,
                ctx=ctx,
            )
        except Exception as exc:
            self.rt.report("request", exc)
            return None
        want_stream = bool(kwargs.get("stream", False))
        return _Prepared(call, request, want_stream, bool(inject), ctx)

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
            temperature=facts.temperature,
            tools=tool_count(route, facts.body),
            _estimate=lambda: self._estimate_input(route, facts),
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

    def _estimate_input(self, route: Route, facts: RequestFacts) -> int:
        from costspan.instrumentation._facts import input_text
        from costspan.instrumentation._tokens import lean_high, scaled

        text, messages = input_text(facts.body)
        return scaled(*self.rt.tokens.count(text), lean_high(route.family, facts.model))[0] + 4 * messages

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
            content_type, encoding = _content_headers(headers.raw)
            if response.is_stream_consumed:  # a transport that returned a response already read
                tap = BodyTap(call.route, content_type, "", False, on_done)
                tap.feed(response.content)
                tap.end_of_body()
                return
            tap = BodyTap(call.route, content_type, encoding, prep.inject, on_done)
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

    def _whole(self, prep: _Prepared, response: Any, error: BaseException | None) -> None:
        """A non-streamed answer, read (decoded) by the library itself: watch it in one go."""
        call = prep.call
        status = response.status_code

        def on_done(tap: BodyTap, err: BaseException | None) -> None:
            call.finish(status, tap, err)

        try:
            tap = BodyTap(call.route, _content_headers(response.headers.raw)[0], "", False, on_done)
            if error is not None:  # the body broke off: what was read of it is lost with the exception
                tap.finish(error)
                return
            tap.feed(response.content)
            tap.end_of_body()
        except Exception as exc:
            self.rt.report("response", exc)
            call.finish(status, None, error)

    # --- the wrappers -------------------------------------------------------------------------------
    def sync_send(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        prep = self._begin(args, kwargs)
        if prep is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _with_request(args, kwargs, prep.request)
        call = prep.call
        token = context.attach(_call_context(call, prep.ctx))
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.finish(None, None, exc)
            raise
        finally:
            context.detach(token)
        if prep.want_stream or call.request.stream:
            self._tap(prep, response, is_async=False)
            if not prep.want_stream:
                try:
                    response.read()
                except BaseException:
                    response.close()
                    raise
            return response
        try:
            response.read()
        except BaseException as exc:
            self._whole(prep, response, exc)
            response.close()
            raise
        self._whole(prep, response, None)
        return response

    async def async_send(self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any) -> Any:
        prep = self._begin(args, kwargs)
        if prep is None:
            return await wrapped(*args, **kwargs)
        args, kwargs = _with_request(args, kwargs, prep.request)
        call = prep.call
        token = context.attach(_call_context(call, prep.ctx))
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.finish(None, None, exc)
            raise
        finally:
            context.detach(token)
        if prep.want_stream or call.request.stream:
            self._tap(prep, response, is_async=True)
            if not prep.want_stream:
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
            return response
        try:
            await response.aread()
        except BaseException as exc:
            self._whole(prep, response, exc)
            await response.aclose()
            raise
        self._whole(prep, response, None)
        return response


_USAGE_REQUESTED = b'"stream_options":{"include_usage":true},'


def _usage_requested_bytes(content: bytes) -> bytes | None:
    """The request body with ``stream_options.include_usage`` added as its first key, without parsing
    and re-serializing a (possibly large) body; None when the body is not a non-empty JSON object."""
    start = content.find(b"{")
    if start < 0 or content[:start].strip() or content[start + 1 :].lstrip()[:1] in (b"}", b""):
        return None
    return content[: start + 1] + _USAGE_REQUESTED + content[start + 1 :]


def _content_headers(raw: list[tuple[bytes, bytes]]) -> tuple[str, str]:
    """(Content-Type, Content-Encoding) from raw header pairs, in one pass (repeats joined by commas)."""
    content_type: list[str] = []
    encoding: list[str] = []
    for key, value in raw:
        if len(key) == 12 and key.lower() == b"content-type":
            content_type.append(value.decode("latin-1"))
        elif len(key) == 16 and key.lower() == b"content-encoding":
            encoding.append(value.decode("latin-1"))
    return ", ".join(content_type), ", ".join(encoding)


def _with_request(
    args: tuple[Any, ...], kwargs: dict[str, Any], request: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The send arguments with ``request`` swapped in and the body always streamed (costspan reads it)."""
    kwargs = {**kwargs, "stream": True}
    if args:
        return (request, *args[1:]), kwargs
    kwargs["request"] = request
    return args, kwargs


def _call_context(call: Call, ctx: context.Context) -> context.Context:
    ctx = context.set_value(_ACTIVE_KEY, True, ctx)
    if call.span is not None:
        ctx = trace.set_span_in_context(call.span, ctx)
    return ctx
