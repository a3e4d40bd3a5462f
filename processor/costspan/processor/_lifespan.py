"""One lifespan per app, composed of the pieces' own: each piece adds itself with :func:`add_lifespan`.

:func:`~costspan.processor.serve._app.create_app` gives its app :func:`composed_lifespan`, which
enters the pieces in order when the server starts and leaves them in reverse order when it stops
(an ``AsyncExitStack``: when a piece fails to start, the ones started before it are stopped). A
piece is an async context manager factory taking the app: ``@asynccontextmanager async def
piece(app): ...``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

__all__ = ["Lifespan", "add_lifespan", "composed_lifespan"]

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

#: Where an app keeps its pieces (``app.state``).
_PIECES = "lifespan_pieces"


def add_lifespan(app: FastAPI, piece: Lifespan, *, outermost: bool = False) -> None:
    """Run ``piece`` in ``app``'s :func:`composed_lifespan`: started after the pieces added before it
    and stopped before them; with ``outermost``, started before every piece added so far and stopped
    after them (e.g. a snapshot saved once everything else, the store included, has closed)."""
    pieces: list[Lifespan] | None = getattr(app.state, _PIECES, None)
    if pieces is None:
        pieces = []
        setattr(app.state, _PIECES, pieces)
    if outermost:
        pieces.insert(0, piece)
    else:
        pieces.append(piece)


@asynccontextmanager
async def composed_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan (``FastAPI(lifespan=composed_lifespan)``): every piece :func:`add_lifespan` added."""
    pieces: list[Lifespan] = getattr(app.state, _PIECES, [])
    async with AsyncExitStack() as stack:
        for piece in list(pieces):
            await stack.enter_async_context(piece(app))
        yield
