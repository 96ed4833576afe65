"""Clerk events applied to the credits store, exactly once per account however often
Svix redelivers them (each step is once-per-account inside its own script)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import ValidationError
from ..models import InitResult, MutationResult
from .webhooks import ClerkEvent

if TYPE_CHECKING:
    from ..async_client import AsyncCreditsClient
    from ..client import CreditsClient

__all__ = ["EventOutcome", "ahandle_clerk_event", "handle_clerk_event"]

logger = logging.getLogger("sparked_credits.clerk")

# -- events -----------------------------------------------------------------------------

Outcome = Literal["initialized", "already_initialized", "closed", "already_closed", "ignored"]


class EventOutcome(BaseModel):
    """What :func:`handle_clerk_event` did; ``duplicate`` is True when the event had
    already been applied (a Svix redelivery) and nothing changed now."""

    model_config = ConfigDict(frozen=True)

    type: str
    svix_id: str | None = None
    outcome: Outcome
    account: str | None = None
    balance: int | None = None
    duplicate: bool = False


class _Step:
    """One client call an event asks for: the plan both the sync and async handlers run."""

    __slots__ = ("account", "kind", "kwargs")

    def __init__(self, kind: Literal["init", "close"], account: str, **kwargs: Any) -> None:
        self.kind = kind
        self.account = account
        self.kwargs = kwargs

    @property
    def method(self) -> str:
        return "initialize_user" if self.kind == "init" else "close_account"


def _event_id(event: ClerkEvent) -> str:
    value = event.data.get("id")
    if not isinstance(value, str) or not value:
        raise ValidationError("data.id", f"a {event.type} event without an id")
    return value


def _plan(
    event: ClerkEvent,
    svix_id: str | None,
    org_balances: bool,
    user_credits: int | None,
    org_credits: int | None,
) -> _Step | None:
    """Pure: which call (if any) applies ``event``. Each call is once-per-account in its
    own script, so a redelivered event changes nothing the second time."""
    delivery = svix_id or event.svix_id
    if event.type == "user.created":
        return _Step(
            "init", _event_id(event), credits=user_credits, reason=f"clerk {event.type} {delivery}"
        )
    if event.type == "organization.created" and org_balances:
        return _Step(
            "init", _event_id(event), credits=org_credits, reason=f"clerk {event.type} {delivery}"
        )
    if event.type in ("user.deleted", "organization.deleted"):
        return _Step(
            "close",
            _event_id(event),
            reason=f"clerk {event.type}",
            metadata={"svix_id": delivery},
        )
    return None


def _outcome(
    event: ClerkEvent, svix_id: str | None, step: _Step | None, result: Any
) -> EventOutcome:
    delivery = svix_id or event.svix_id
    if step is None:
        logger.info("clerk event %s (%s) ignored", event.type, delivery)
        return EventOutcome(type=event.type, svix_id=delivery, outcome="ignored")
    if isinstance(result, InitResult):
        outcome: Outcome = "initialized" if result.created else "already_initialized"
        duplicate = not result.created
        balance = result.balance
    else:
        assert isinstance(result, MutationResult)
        outcome = "already_closed" if result.replayed else "closed"
        duplicate = result.replayed
        balance = result.balance
    logger.info("clerk event %s (%s): account %s %s", event.type, delivery, step.account, outcome)
    return EventOutcome(
        type=event.type,
        svix_id=delivery,
        outcome=outcome,
        account=step.account,
        balance=balance,
        duplicate=duplicate,
    )


def handle_clerk_event(
    client: CreditsClient,
    event: ClerkEvent,
    *,
    svix_id: str | None = None,
    org_balances: bool = False,
    user_credits: int | None = None,
    org_credits: int | None = None,
) -> EventOutcome:
    """Apply a verified Clerk event to the credits store.

    * ``user.created``: the user's account gets its starting credits (``user_credits``,
      default the client's default_credits), once ever: initialize_user is once per
      account inside its script, so Svix redelivering the event (same svix-id, hours
      later, or concurrently to two workers) grants nothing more.
    * ``user.deleted`` (and ``organization.deleted``): the account is closed; its ledger
      is kept; later charges raise AccountClosedError; a late ``user.created`` grants nothing.
    * ``organization.created``: the organization's own account, only with
      ``org_balances=True``.
    * anything else: acknowledged and ignored (answer 2xx so Svix stops retrying).
    """
    step = _plan(event, svix_id, org_balances, user_credits, org_credits)
    result = None if step is None else getattr(client, step.method)(step.account, **step.kwargs)
    return _outcome(event, svix_id, step, result)


async def ahandle_clerk_event(
    client: AsyncCreditsClient,
    event: ClerkEvent,
    *,
    svix_id: str | None = None,
    org_balances: bool = False,
    user_credits: int | None = None,
    org_credits: int | None = None,
) -> EventOutcome:
    """:func:`handle_clerk_event` for the AsyncCreditsClient."""
    step = _plan(event, svix_id, org_balances, user_credits, org_credits)
    result = None
    if step is not None:
        result = await getattr(client, step.method)(step.account, **step.kwargs)
    return _outcome(event, svix_id, step, result)
