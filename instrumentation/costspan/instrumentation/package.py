"""What costspan's instrumentation instruments (literals only)."""

_instruments_httpx = ("httpx >= 0.23.0",)
_instruments_httpx2 = ("httpx2 >= 2.0.0",)

# Either HTTP client library is enough: openai 3.x and anthropic 2.x use httpx2, older SDKs httpx.
_instruments: tuple[str, ...] = ()
_instruments_any = (*_instruments_httpx, *_instruments_httpx2)

_supports_metrics = True
