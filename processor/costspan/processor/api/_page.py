"""``GET /dashboard``: a small page over the usage API, and ``GET /api/dashboard/summary`` that feeds it.

The page is one static HTML file (no build step). It asks the viewer for an API key (or takes it from
the URL fragment ``#key=...``) and reads the summary with it, so a tenant key sees its own tenant only.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["dashboard_router"]


def dashboard_router() -> APIRouter:
    from costspan.processor.api._routes_dashboard import router as summary

    router = APIRouter()
    page = resources.files("costspan.processor.api").joinpath("web/dashboard.html").read_text(encoding="utf-8")

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    router.include_router(summary)
    return router
