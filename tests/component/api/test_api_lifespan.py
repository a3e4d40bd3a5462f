"""The app's lifespan is its pieces' own, composed: started in order, stopped in reverse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI

from costspan.processor._lifespan import Lifespan, add_lifespan, composed_lifespan


def _piece(name: str, log: list[str], *, fail: bool = False) -> Lifespan:
    @asynccontextmanager
    async def piece(_: FastAPI) -> AsyncIterator[None]:
        log.append(f"start {name}")
        if fail:
            raise RuntimeError(name)
        try:
            yield
        finally:
            log.append(f"stop {name}")

    return piece


def test_pieces_start_in_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    app = FastAPI(lifespan=composed_lifespan)
    add_lifespan(app, _piece("store", log))
    add_lifespan(app, _piece("index", log))
    add_lifespan(app, _piece("snapshot", log), outermost=True)
    add_lifespan(app, _piece("budgets", log))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            log.append("serving")

    asyncio.run(run())
    assert log == [
        "start snapshot",
        "start store",
        "start index",
        "start budgets",
        "serving",
        "stop budgets",
        "stop index",
        "stop store",
        "stop snapshot",
    ]


def test_a_piece_that_fails_to_start_stops_the_ones_before_it() -> None:
    log: list[str] = []
    app = FastAPI(lifespan=composed_lifespan)
    add_lifespan(app, _piece("store", log))
    add_lifespan(app, _piece("index", log, fail=True))
    add_lifespan(app, _piece("budgets", log))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            log.append("serving")

    with pytest.raises(RuntimeError, match="index"):
        asyncio.run(run())
    assert log == ["start store", "start index", "stop store"]
