"""Every route of the setup guide, as one FastAPI app factory.

Run one process for everything on an in-process store::

    REDIS_URL=memory:// CLERK_JWT_KEY="$(cat clerk.pem)" ... \
        uvicorn --factory credits_app:create_app --app-dir examples

or the four apps as four processes on one Redis (each tags its ledger entries with its own
``SPARKED_APP``; the balance is shared)::

    REDIS_URL=redis://localhost:6379/0 SPARKED_APP=canvas.sparked.world uvicorn ... --port 8001

Configuration (environment, read by :meth:`Settings.from_env`):

=============================  ===========================================================
``REDIS_URL`` / ``UPSTASH_*``  the credits store (``memory://`` only when set explicitly)
``SPARKED_APP``                this process's app name, on every ledger entry it writes
``CLERK_JWT_KEY``              Clerk's PEM public key (networkless verification), or
``CLERK_JWKS_URL``             ``https://<your-frontend-api>/.well-known/jwks.json``
``CLERK_AUTHORIZED_PARTIES``   comma-separated origins allowed to hold session tokens
``CLERK_WEBHOOK_SECRET``       the Clerk webhook endpoint's ``whsec_...`` secret
``CRON_SECRET``                what ``GET /api/cron/reconcile`` expects as Bearer token
``CREDITS_ADMIN_USER_IDS``     comma-separated Clerk user ids allowed to grant credits
``TRAIN_WEBHOOK_SECRET``       the training provider's webhook signing secret
``CREDITS_RATE_LIMIT``         per user and spending route, e.g. ``20/minute`` (``off``)
``CREDITS_ORG_BALANCES``       ``1``: organization.created opens an org account, and a
                               session with an active organization spends from it
                               (``controls_routes.py``: org balance, org admin grants)
``CREDITS_REFERRAL_SECRET``    signs referral codes (``/api/referrals/*``; unset: off);
                               ``CREDITS_REFERRER_CREDITS`` (50),
                               ``CREDITS_REFERRED_CREDITS`` (20), ``CREDITS_REFERRAL_CAP``
                               (rewards per referrer per month; unset: none)
``STRIPE_API_KEY``             creates Checkout Sessions (``POST /api/credits/checkout``);
                               ``STRIPE_API_BASE`` points the library at another server
``STRIPE_WEBHOOK_SECRET``      the Stripe endpoint's ``whsec_...`` secret
                               (``POST /api/webhooks/stripe``); packs and plans come from
                               the price file (``SPARKED_CREDITS_PRICING``)
``CREDITS_DEV_SIGNIN``         ``1``: development only, with ``REDIS_URL=memory://`` and no
                               Clerk key: tokens signed by a throwaway key for a demo user
                               (``POST /api/dev/signin``), so the credits page works
                               without a Clerk account (see ``dev_signin.py``)
``SPARKED_CREDITS_ARCHIVE_URL`` the PostgreSQL archive: history reads on into it, and the
                               admin dashboard (``GET /admin/dashboard``) reports from it
=============================  ===========================================================

The credits page (``GET /credits``, ``credits_page.py``, needs the ``page`` extra) shows the
balance, history and usage of the signed-in user and spends through the routes below.

The work itself (``process_chat_message``, ``generate_canvas``, ``render_video`` in
``app_flows.py``, ``submit_training_job`` here) is a placeholder for you to replace.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import pydantic
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sparked_credits import ConfigurationError, CreditsClient, CreditsError, HoldNotFoundError
from sparked_credits.clerk import (
    ClerkPrincipal,
    handle_clerk_event,
    load_jwt_key,
    verify_cron_secret,
    verify_webhook,
)
from sparked_credits.integrations.fastapi import (
    ClerkAuth,
    CreditsRoute,
    IdempotentRequest,
    authorize,
    get_clerk_user,
    get_credits,
    idempotent,
    rate_limited,
    read_body_limited,
    setup_credits,
)
from sparked_credits.integrations.http_errors import HTTPRefusal
from sparked_credits.integrations.ratelimit import AccountRateLimiter
from sparked_credits.pricing import active_price_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import app_flows  # the four apps' charging logic, shared with the tests
from controls_routes import controls_routes, spending_account
from dev_signin import USER_ID, DevSignin
from member_routes import member_routes
from money_routes import money_routes
from topup_routes import topup_routes

logger = logging.getLogger("credits_app")

# Dependencies, resolved per request from what create_app() put on the app.
Credits = Annotated[CreditsClient, Depends(get_credits)]
User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]
# The spending routes: verify the session, then count the request against the user's
# limit on that route (429 with Retry-After past it, before anything is charged).
ChatUser = Annotated[ClerkPrincipal, Depends(rate_limited("chat"))]
CanvasUser = Annotated[ClerkPrincipal, Depends(rate_limited("canvas"))]
VideoUser = Annotated[ClerkPrincipal, Depends(rate_limited("video"))]
TrainUser = Annotated[ClerkPrincipal, Depends(rate_limited("train"))]


# -- configuration ----------------------------------------------------------------------


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


class Settings(BaseModel):
    """Everything the app reads from the environment, validated once at startup."""

    model_config = ConfigDict(frozen=True)

    storage_url: str | None = Field(
        default=None, description="None: CreditsClient.from_env() (REDIS_URL, UPSTASH_*)."
    )
    app_name: str = "app.sparked.world"
    clerk_jwt_key: str | None = None
    clerk_jwks_url: str | None = None
    authorized_parties: tuple[str, ...] | None = None
    clerk_webhook_secret: str | None = None
    cron_secret: str | None = None
    admin_user_ids: frozenset[str] = frozenset()
    train_webhook_secret: str | None = None
    rate_limit: str | None = "20/minute"
    default_credits: int = 100
    org_balances: bool = False
    referral_secret: str | None = None
    referrer_credits: int = Field(default=50, gt=0)
    referred_credits: int = Field(default=20, gt=0)
    referral_cap: int | None = Field(default=None, gt=0)
    dev_signin: bool = Field(
        default=False, description="Development only: local tokens for a demo user."
    )
    dev_user: str = "user_demo"
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    archive_url: str | None = Field(
        default=None, description="The PostgreSQL archive (history beyond Redis, dashboard)."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        limit = env.get("CREDITS_RATE_LIMIT", "20/minute").strip()
        parties = _csv(env.get("CLERK_AUTHORIZED_PARTIES"))
        return cls(
            app_name=env.get("SPARKED_APP", "app.sparked.world"),
            clerk_jwt_key=env.get("CLERK_JWT_KEY") or None,
            clerk_jwks_url=env.get("CLERK_JWKS_URL") or None,
            authorized_parties=parties or None,
            clerk_webhook_secret=env.get("CLERK_WEBHOOK_SECRET") or None,
            cron_secret=env.get("CRON_SECRET") or None,
            admin_user_ids=frozenset(_csv(env.get("CREDITS_ADMIN_USER_IDS"))),
            train_webhook_secret=env.get("TRAIN_WEBHOOK_SECRET") or None,
            rate_limit=None if limit.lower() in ("", "off", "none") else limit,
            default_credits=int(env.get("CREDITS_DEFAULT", "100")),
            org_balances=env.get("CREDITS_ORG_BALANCES", "") in ("1", "true", "yes"),
            referral_secret=env.get("CREDITS_REFERRAL_SECRET") or None,
            referrer_credits=int(env.get("CREDITS_REFERRER_CREDITS", "50")),
            referred_credits=int(env.get("CREDITS_REFERRED_CREDITS", "20")),
            referral_cap=int(env.get("CREDITS_REFERRAL_CAP") or 0) or None,
            dev_signin=env.get("CREDITS_DEV_SIGNIN", "") in ("1", "true", "yes"),
            dev_user=env.get("CREDITS_DEV_USER", "user_demo"),
            stripe_api_key=env.get("STRIPE_API_KEY") or None,
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
            archive_url=env.get("SPARKED_CREDITS_ARCHIVE_URL") or None,
        )


# -- placeholders: replace with your implementation ------------------------------------


def submit_training_job(job_id: str, user_id: str, hold_id: str, gpu_hours: float) -> None:
    """PLACEHOLDER: submit the job to your GPU provider here.

    Pass ``job_id``, ``user_id`` and ``hold_id`` as the job's metadata: the provider sends
    them back, signed, to ``POST /api/train/webhook`` when the job ends.
    """
    logger.info("training job %s submitted (placeholder)", job_id)


def get_all_user_ids() -> list[str] | None:
    """PLACEHOLDER: the accounts the cron job reconciles (e.g. from Clerk's user list).

    None (the default here) reconciles every account that has a ledger, found by SCAN;
    ``GET /api/cron/reconcile?account=...`` names accounts explicitly instead.
    """
    return None


# -- request and response bodies --------------------------------------------------------


class _Body(BaseModel):
    """Request bodies: NaN and Infinity are not numbers a request may carry."""

    model_config = ConfigDict(allow_inf_nan=False)


class ChatRequest(_Body):
    message: str = Field(min_length=1, max_length=10_000)
    message_id: str | None = Field(
        default=None, max_length=200, description="The request id (or Idempotency-Key)."
    )


class CanvasRequest(_Body):
    prompt: str = Field(min_length=1, max_length=10_000)
    complex: bool = False
    request_id: str | None = Field(default=None, max_length=200)


class VideoRequest(_Body):
    prompt: str = Field(default="", max_length=10_000)
    duration: float = Field(gt=0, le=3600, description="Seconds of video: 10 credits each.")
    request_id: str | None = Field(default=None, max_length=200)


class TrainStartRequest(_Body):
    estimated_gpu_hours: float = Field(gt=0, le=10_000)
    job_id: str | None = Field(default=None, pattern=r"^[\x21-\x7e]{1,100}$")


class TrainWebhook(_Body):
    """What the provider sends back when a job ends (with the metadata given at start):
    ``{"job_id", "user_id", "hold_id", "reserved", "status": "succeeded" | "failed",
    "gpu_hours"}``, signed with ``X-Train-Signature: sha256=<hex HMAC-SHA256 of the raw
    body with TRAIN_WEBHOOK_SECRET>``."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    job_id: str = Field(min_length=1, max_length=100)
    user_id: str = Field(min_length=1, max_length=128)
    hold_id: str = Field(min_length=1, max_length=64)
    reserved: int = Field(default=0, ge=0, le=2**53 - 1)
    status: Literal["succeeded", "failed"]
    gpu_hours: float = Field(default=0, ge=0, le=100_000)


class DevSigninRequest(_Body):
    user: str | None = Field(default=None, pattern=USER_ID.pattern, description="user_...")


class GrantRequest(_Body):
    user_id: str = Field(min_length=1, max_length=128)
    amount: int = Field(gt=0, le=2**53 - 1)
    reason: str | None = Field(default=None, max_length=500)


# -- the app ----------------------------------------------------------------------------


_CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def _check_cursor(cursor: str | None) -> None:
    """A history cursor is an entry id the previous page returned: anything else (or
    ``0-0``, before the first possible entry) is the client's mistake, a 400."""
    if cursor is None:
        return
    parts = [int(p) for p in cursor.split("-")] if _CURSOR.fullmatch(cursor) else []
    if not parts or parts == [0, 0] or max(parts) >= 2**64:
        raise HTTPRefusal(400, "invalid_cursor", "cursor must be a next_cursor from a page")


def _check_time_zone(tz: str | None) -> None:
    """An IANA zone name (``Europe/Paris``); ``America`` (a directory) or ``Mars/Base``
    is a 400, never a crash in the zone database."""
    if tz is None:
        return
    try:
        ZoneInfo(tz)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise HTTPRefusal(
            400, "invalid_time_zone", "tz must be an IANA time zone such as Europe/Paris"
        ) from None


def _is_admin(settings: Settings) -> Any:
    def check(principal: ClerkPrincipal) -> bool:
        return principal.user_id in settings.admin_user_ids  # replace with your admin check

    return check


def verify_train_signature(body: bytes, header: str | None, secret: str) -> bool:
    """``X-Train-Signature: sha256=<hex HMAC-SHA256 of the raw body>``, constant-time.

    PLACEHOLDER scheme: use whatever your provider signs with (most do exactly this).
    """
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256=") :].strip().encode(), expected.encode())


def create_app(
    settings: Settings | None = None, client: CreditsClient | None = None
) -> FastAPI:
    """The app: ``uvicorn --factory credits_app:create_app`` reads the environment.

    Read from the environment (uvicorn's factory call), a configuration error ends the
    process with one line saying what to set, not a traceback."""
    if settings is None:
        try:
            return _create_app(Settings.from_env(), client)
        except ConfigurationError as exc:
            raise SystemExit(f"credits_app: {exc}") from None
    return _create_app(settings, client)


def _create_app(settings: Settings, client: CreditsClient | None) -> FastAPI:
    # Checked before the store is opened: a misconfigured app fails at once.
    clerk_configured = bool(settings.clerk_jwt_key or settings.clerk_jwks_url)
    if settings.dev_signin and clerk_configured:
        raise ConfigurationError(
            "CREDITS_DEV_SIGNIN=1 is for running without Clerk, but a Clerk key is set: "
            "unset one of them"
        )
    if not (clerk_configured or settings.dev_signin):
        raise ConfigurationError(
            "CLERK_JWT_KEY is empty or unset (was its key file missing?): set it, or "
            "CLERK_JWKS_URL, to verify sessions; for local runs 'sparked-credits dev keys DIR' "
            "makes one, or CREDITS_DEV_SIGNIN=1 with REDIS_URL=memory://"
        )
    if settings.clerk_jwt_key:
        if "BEGIN" not in settings.clerk_jwt_key:
            raise ConfigurationError(
                "CLERK_JWT_KEY holds the PEM key itself, not a file name: "
                'export CLERK_JWT_KEY="$(cat clerk-public.pem)"'
            )
        load_jwt_key(settings.clerk_jwt_key)  # a bad key fails here, not on the first request
    given = client
    if client is None:
        options: dict[str, Any] = {
            "app": settings.app_name,
            "default_credits": settings.default_credits,
            "archive": settings.archive_url,
        }
        client = (
            CreditsClient(settings.storage_url, **options)
            if settings.storage_url
            else CreditsClient.from_env(**options)
        )
    dev = None
    if settings.dev_signin:
        if not client.storage.url.startswith("memory://") or not USER_ID.match(settings.dev_user):
            if client is not given:
                client.close()
            raise ConfigurationError(
                "CREDITS_DEV_SIGNIN=1 works only on the in-process store (REDIS_URL=memory://),"
                " never on a shared, real one, and with a CREDITS_DEV_USER like user_demo"
            )
        dev = DevSignin(settings.dev_user)
        logger.warning("DEV SIGN-IN IS ON: anyone can sign in as a demo user (memory:// only)")
    elif settings.authorized_parties is None:
        logger.warning("CLERK_AUTHORIZED_PARTIES is not set: token azp is not checked")
    auth = ClerkAuth(
        jwt_key=dev.public_pem if dev else settings.clerk_jwt_key,
        jwks_url=None if dev or settings.clerk_jwt_key else settings.clerk_jwks_url,
        authorized_parties=settings.authorized_parties,
    )
    limiter = None
    if settings.rate_limit:
        limiter = AccountRateLimiter.for_credits_url(settings.rate_limit, client.storage.url)

    store = client

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title=f"sparked credits ({settings.app_name})", lifespan=lifespan)
    setup_credits(app, client, auth=auth, rate_limiter=limiter)
    app.include_router(_shared_routes(settings))
    app.include_router(_app_routes(settings))
    app.include_router(
        controls_routes(
            org_balances=settings.org_balances,
            referral_secret=settings.referral_secret,
            referrer_credits=settings.referrer_credits,
            referred_credits=settings.referred_credits,
            referral_cap=settings.referral_cap,
        )
    )
    if dev is not None:
        app.include_router(_dev_routes(dev))
    catalog = active_price_table().catalog
    app.include_router(topup_routes(catalog, org_balances=settings.org_balances))
    app.include_router(member_routes(org_balances=settings.org_balances))
    app.include_router(
        money_routes(
            catalog,
            webhook_secret=settings.stripe_webhook_secret,
            api_key=settings.stripe_api_key,
            api_base=settings.stripe_api_base,
        )
    )
    try:
        from credits_page import mount_credits_page
    except ImportError as exc:  # jinja2 missing: the API works, the page does not
        logger.warning("no credits page (%s): pip install 'sparked-credits[page]'", exc)
    else:
        mount_credits_page(
            app, client, app_name=settings.app_name, dev_signin=dev is not None, catalog=catalog
        )
    from dashboard import mount_dashboard

    mount_dashboard(
        app,
        app_name=settings.app_name,
        archive_url=settings.archive_url,
        is_admin=_is_admin(settings),
        dev_signin=dev is not None,
    )
    return app


def _dev_routes(dev: DevSignin) -> APIRouter:
    """``POST /api/dev/signin``: a session token for a demo user (development only)."""
    router = APIRouter()

    @router.post("/api/dev/signin")
    def dev_signin(
        request: Request, credits: Credits, body: DevSigninRequest | None = None
    ) -> dict[str, Any]:
        """Sign in as ``body.user`` (default the app's demo user); a new user gets the
        default credits, once, like Clerk's user.created would give."""
        user_id = (body.user if body else None) or dev.default_user
        credits.initialize_user(user_id, reason="dev sign-in")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return {**dev.mint(user_id, origin=origin), "balance": credits.get_balance(user_id)}

    return router


def _shared_routes(settings: Settings) -> APIRouter:
    """Balance, history, the Clerk webhook, admin grants, cron: the guide's shared routes."""
    router = APIRouter(route_class=CreditsRoute)

    @router.get("/api/credits/balance")
    def balance(user: User, credits: Credits) -> dict[str, Any]:
        return {"balance": credits.get_balance(user.user_id)}

    @router.get("/api/credits/history")
    def history(
        user: User,
        credits: Credits,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        _check_cursor(cursor)
        page = credits.history(user.user_id, limit=limit, cursor=cursor)
        return {
            "transactions": [e.model_dump(mode="json") for e in page.entries],
            "next_cursor": page.next_cursor,
        }

    @router.get("/api/credits/usage")
    def usage(
        user: User,
        credits: Credits,
        days: Annotated[int, Query(ge=1, le=90)] = 7,
        group_by: Literal["action", "app"] = "action",
        tz: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Credits used per day (today last, idle days as 0) by action or app, in ``tz``
        (an IANA name such as ``Europe/Paris``; default UTC): the usage chart's data."""
        _check_time_zone(tz)
        report = credits.usage(user.user_id, days=days, group_by=group_by, tz=tz)
        return {
            "group_by": report.group_by,
            "time_zone": report.time_zone,
            "total": report.total,
            "days": [d.model_dump(mode="json") for d in report.days],
        }

    @router.get("/api/credits/grants")
    def grants(
        user: User, credits: Credits, days: Annotated[int, Query(ge=1, le=90)] = 7
    ) -> dict[str, Any]:
        """The open credit lots in spending order, and what of them expires in the next
        ``days`` days (the credits page's "expiring soon" line)."""
        lots = credits.grants(user.user_id)
        horizon = datetime.now(timezone.utc) + timedelta(days=days)
        soon = [g for g in lots if g.expires_at is not None and g.expires_at <= horizon]
        first = min((g.expires_at for g in soon if g.expires_at is not None), default=None)
        return {
            "grants": [g.model_dump(mode="json") for g in lots],
            "expiring": {
                "days": days,
                "credits": sum(g.remaining for g in soon),
                "first": first.isoformat() if first else None,
            },
        }

    @router.post("/api/webhooks/clerk")
    async def clerk_webhook(request: Request, credits: Credits) -> dict[str, Any]:
        if not settings.clerk_webhook_secret:
            raise ConfigurationError("CLERK_WEBHOOK_SECRET is not set")
        body = await read_body_limited(request)  # 413 past 1 MiB, before reading it whole
        event = verify_webhook(body, request.headers, settings.clerk_webhook_secret)
        # Blocking store calls leave the event loop for the thread pool.
        outcome = await run_in_threadpool(
            handle_clerk_event, credits, event, org_balances=settings.org_balances
        )
        return {"received": True, **outcome.model_dump(mode="json")}

    @router.post("/api/admin/credits/grant")
    @authorize(_is_admin(settings))  # 403 before the body is read: non-admins learn nothing
    @idempotent("admin_grant")  # one grant per Idempotency-Key (and body)
    def grant(
        body: GrantRequest, user: User, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        result = credits.credit(
            body.user_id,
            body.amount,
            source="admin_grant",
            reason=body.reason,
            metadata={"granted_by": user.user_id},
            idempotency_key=req.charge_key("grant"),
        )
        return {"balance": result.balance, "entry_id": result.entry.id, "replayed": result.replayed}

    @router.get("/api/cron/reconcile")
    def reconcile(
        credits: Credits,
        authorization: Annotated[str | None, Header()] = None,
        account: Annotated[list[str] | None, Query()] = None,
        repair: bool = False,
    ) -> dict[str, Any]:
        """Vercel Cron (``vercel.json``: every 6 hours) sends ``Bearer $CRON_SECRET``.
        Expired holds go back first, then every account's balance is checked against its
        ledger; ``?repair=true`` fixes a mismatch (the ledger wins, an entry records it)."""
        if not settings.cron_secret or not verify_cron_secret(authorization, settings.cron_secret):
            raise HTTPRefusal(401, "unauthorized", "bad cron secret")
        report = credits.reconcile_all(account or get_all_user_ids(), repair=repair)
        if not report.clean:
            logger.warning(
                "reconcile: %d of %d accounts mismatched, %d repaired, %d errors",
                report.mismatched,
                report.checked,
                report.repaired,
                len(report.errors),
            )
        return {"clean": report.clean, **report.model_dump(mode="json")}

    return router


def _app_routes(settings: Settings) -> APIRouter:
    """The four apps' spending routes, rate limited per user and route."""
    router = APIRouter(route_class=CreditsRoute)

    # Each spending route is idempotent: its request id (the Idempotency-Key header or the
    # body's id field) is bound to the user, the route and the body. A repeat answers the
    # first response without running the work again; another body with the same id is a
    # 409. Charge keys derive from req.request_id, so a retry after a lost answer or a
    # crash replays the charge instead of charging twice.

    @router.post("/api/chat")
    @idempotent("chat", body_field="message_id")
    def chat(
        body: ChatRequest, user: ChatUser, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        account, member = spending_account(settings.org_balances, user)
        reply, charged = app_flows.send_chat_message(
            credits, account, req.request_id, body.message, metadata=member or None
        )
        return {"reply": reply, "credits_used": charged.entry.amount, "balance": charged.balance}

    @router.post("/api/generate")
    @idempotent("canvas", body_field="request_id")
    def generate(
        body: CanvasRequest, user: CanvasUser, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        account, member = spending_account(settings.org_balances, user)
        canvas, charged = app_flows.create_canvas(
            credits, account, req.request_id, body.prompt, body.complex, metadata=member or None
        )
        return {"canvas": canvas, "credits_used": charged.entry.amount, "balance": charged.balance}

    @router.post("/api/video/generate")
    @idempotent("video", body_field="request_id")
    def video(
        body: VideoRequest, user: VideoUser, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        try:
            account, member = spending_account(settings.org_balances, user)
            result, charged = app_flows.create_video(
                credits, account, req.request_id, body.prompt, body.duration,
                metadata=member or None,
            )
        except CreditsError:
            raise  # 402, 503...: nothing was charged, or the SDK says what may have applied
        except Exception as exc:  # the rendering failed: create_video refunded the charge
            logger.exception("video rendering failed for %s", user.user_id)
            raise HTTPRefusal(502, "generation_failed", "the video could not be rendered") from exc
        return {"video": result, "credits_used": charged.entry.amount, "balance": charged.balance}

    @router.post("/api/train/start")
    @idempotent("train", body_field="job_id")
    def train_start(
        body: TrainStartRequest, user: TrainUser, credits: Credits, req: IdempotentRequest
    ) -> dict[str, Any]:
        job_id = body.job_id or req.request_id
        job = app_flows.start_training(
            credits, user.user_id, job_id, body.estimated_gpu_hours, request_id=req.request_id
        )
        try:
            submit_training_job(job.job_id, job.user_id, job.hold_id, body.estimated_gpu_hours)
        except Exception:
            credits.release(job.user_id, job.hold_id, reason="training submission failed")
            raise
        return {
            "job_id": job.job_id,
            "hold_id": job.hold_id,
            "reserved": job.reserved,
            "balance": credits.get_balance(user.user_id),
        }

    @router.post("/api/train/webhook")
    async def train_webhook(
        request: Request,
        credits: Credits,
        x_train_signature: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        if not settings.train_webhook_secret:
            raise ConfigurationError("TRAIN_WEBHOOK_SECRET is not set")
        raw = await read_body_limited(request)  # 413 past 1 MiB, before reading it whole
        if not verify_train_signature(raw, x_train_signature, settings.train_webhook_secret):
            raise HTTPRefusal(400, "bad_signature", "X-Train-Signature does not verify")
        try:
            report = TrainWebhook.model_validate_json(raw)
        except (pydantic.ValidationError, RecursionError) as exc:  # signed, but not a report
            errors = exc.errors() if isinstance(exc, pydantic.ValidationError) else []
            raise RequestValidationError(errors or [{"loc": ("body",), "msg": "too deep"}]) from exc
        return await run_in_threadpool(_finish_training, credits, report)

    return router


def _finish_training(credits: CreditsClient, report: TrainWebhook) -> dict[str, Any]:
    """Settle what the job used (once per job, however often the provider retries), or give
    everything back when it failed."""
    if report.status == "failed":
        try:
            released = credits.release(report.user_id, report.hold_id, reason="training failed")
        except HoldNotFoundError as exc:  # already settled or released: a redelivery
            return {"status": "already_closed", "state": exc.state}
        return {"status": "released", "balance": released.balance}
    job = app_flows.TrainingJob(report.job_id, report.user_id, report.hold_id, report.reserved)
    settled = app_flows.training_webhook(credits, job, report.gpu_hours)
    if settled is None:
        return {"status": "hold_expired"}
    return {
        "status": "settled",
        "credits_used": report.reserved - settled.entry.delta if report.reserved else None,
        "balance": settled.balance,
        "replayed": settled.replayed,
    }
