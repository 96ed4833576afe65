"""A user's app in its own process, for the crash and redelivery tests of idempotent
requests (tests/test_request_crash.py): one idempotent route on CreditsRoute that counts
each run of its work in Redis, then charges.

Environment: ``REDIS_URL``; ``WORKER_JWT_KEY`` (PEM); ``WORKER_LEASE_MS`` (the route's
lease); ``WORKER_HANG_MARKER`` (after the charge, create this file and hang, so that the
test can SIGKILL the process between the charge and the stored answer);
``WORKER_WORK_SECONDS`` (how long the work takes after the charge).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from sparked_credits import CreditsClient
from sparked_credits.clerk import ClerkPrincipal
from sparked_credits.integrations.fastapi import (
    ClerkAuth,
    CreditsRoute,
    IdempotentRequest,
    get_clerk_user,
    get_credits,
    idempotent,
    setup_credits,
)

User = Annotated[ClerkPrincipal, Depends(get_clerk_user)]
Credits = Annotated[CreditsClient, Depends(get_credits)]


class Job(BaseModel):
    note: str


def create_app() -> FastAPI:
    url = os.environ["REDIS_URL"]
    lease = timedelta(milliseconds=int(os.environ.get("WORKER_LEASE_MS", "60000")))
    marker = os.environ.get("WORKER_HANG_MARKER")
    work_seconds = float(os.environ.get("WORKER_WORK_SECONDS", "0"))
    counter = redis.Redis.from_url(url)
    router = APIRouter(route_class=CreditsRoute)

    @router.post("/api/job")
    @idempotent("job", lease=lease)
    def job(body: Job, user: User, credits: Credits, req: IdempotentRequest) -> dict[str, Any]:
        counter.incr(f"runs:{body.note}")
        charged = credits.charge(user.user_id, "chat_message", idempotency_key=req.charge_key())
        if marker:
            Path(marker).touch()
            time.sleep(3600)  # killed here: charged, the answer never stored
        time.sleep(work_seconds)
        return {"note": body.note, "balance": charged.balance, "pid": os.getpid()}

    app = FastAPI()
    setup_credits(app, CreditsClient(url, app="worker.sparked.world"),
                  auth=ClerkAuth(jwt_key=os.environ["WORKER_JWT_KEY"]))
    app.include_router(router)
    return app
