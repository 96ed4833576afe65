"""The admin dashboard: the archive's cross-account figures (``GET /admin/dashboard``).

The page is a shell; its script (``static/dashboard.js``, no dependencies, no CDN) reads
``GET /api/admin/report`` with the session token, like the credits page, and draws the
charts as inline SVG. The route is admin-only (403 for everyone else, before anything is
read) and queries PostgreSQL only (``sparked_credits.archive.report``), never Redis: the
archive must be set (``SPARKED_CREDITS_ARCHIVE_URL``) and kept fresh by ``sparked-credits
archive --follow``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse

from sparked_credits.archive import connect
from sparked_credits.archive.report import build
from sparked_credits.clerk import ClerkPrincipal
from sparked_credits.integrations.fastapi import CreditsRoute, authorize, get_clerk_user
from sparked_credits.integrations.http_errors import HTTPRefusal

HERE = Path(__file__).resolve().parent
User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]


def report_router(archive_url: str | None, is_admin: Callable[[ClerkPrincipal], bool]) -> APIRouter:
    """``GET /api/admin/report``: the report as JSON, for admins only."""
    router = APIRouter(route_class=CreditsRoute)

    @router.get("/api/admin/report")
    @authorize(is_admin)  # 403 before anything is read: non-admins learn nothing
    def admin_report(
        user: User,
        days: Annotated[int, Query(ge=1, le=366)] = 30,
        top: Annotated[int, Query(ge=1, le=100)] = 10,
        low_balance: Annotated[int, Query(ge=0, le=10**12)] = 20,
    ) -> dict[str, Any]:
        """Credits granted/spent/expired/refunded per day, spend by app and action,
        purchases, the liability, credits expiring in 30 days, top and low-balance
        accounts, from the PostgreSQL archive."""
        if not archive_url:
            raise HTTPRefusal(
                404, "no_archive", "no archive: set SPARKED_CREDITS_ARCHIVE_URL and run "
                "sparked-credits archive --follow"
            )
        with connect(archive_url, "sparked-credits dashboard") as conn:
            figures = build(conn, days=days, top=top, low_balance=low_balance)
        return figures.model_dump(mode="json")

    return router


def mount_dashboard(
    app: FastAPI,
    *,
    app_name: str,
    archive_url: str | None,
    is_admin: Callable[[ClerkPrincipal], bool],
    dev_signin: bool,
) -> None:
    """The report route, and the page at ``/admin/dashboard`` (its static files are the
    credits page's, under ``/static/credits``)."""
    app.include_router(report_router(archive_url, is_admin))
    try:
        from credits_page import STATIC_URL, templates
    except ImportError:  # jinja2 missing: the JSON route works, the page does not
        return
    page = APIRouter(include_in_schema=False)

    @page.get("/admin/dashboard", response_class=HTMLResponse)
    def dashboard(request: Request) -> HTMLResponse:
        config = {"devSignin": dev_signin, "devSigninUrl": "/api/dev/signin", "days": 30}
        return templates.TemplateResponse(
            request,
            "dashboard.html",
            {"app_name": app_name, "config": config, "static": STATIC_URL},
        )

    app.include_router(page)
