"""The HTML pages' routes (none in the OpenAPI schema: they are not the JSON API) and the one
stylesheet they share, `GET /static/pages.css` (the pages' Content-Security-Policy allows
styles from the service itself only, never inline)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.pages import invitations
from app.pages.web import HERE

router = APIRouter(include_in_schema=False)

# Read once, at import: a package built without it fails at start-up, not on a page view.
STYLESHEET = (HERE / "static" / "pages.css").read_bytes()


@router.get("/static/pages.css")
async def stylesheet() -> Response:
    """The pages' stylesheet (no token in it: it may be cached)."""
    return Response(
        STYLESHEET,
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


router.include_router(invitations.router, include_in_schema=False)
page = invitations.page  # the pages that are in the schema (`app.main` includes it)
