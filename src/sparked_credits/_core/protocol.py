"""The Python <-> Lua protocol, declared once per script.

Each :class:`ScriptSpec` says what a script takes and gives: its KEYS (by name), its own
ARGV (by name, after the eight every script shares), which of those form the idempotency
fingerprint, its reply shape and the refusals it may answer with. Operations build calls
from it (:meth:`ScriptSpec.call`, keyword arguments only, so a swap cannot type-check) and
decoders map refusals through one table (:data:`REFUSALS`), not an if-chain. Each Lua file
repeats its declaration in a header (``--: argv ...``); ``tests/test_protocol.py`` checks
every declaration against its file, and the ARGV/KEYS indexes the file uses, so the two
cannot drift.

Adding a script: write ``lua/<name>.lua`` with its header, add one ``ScriptSpec`` to
:data:`SPECS`. Adding an argument: append its name to the spec's ``args`` and to the
header, and use ``ARGV[<8 + position>]`` in the Lua.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..errors import (
    AccountClosedError,
    CreditsError,
    EntryNotFoundError,
    HoldExpiredError,
    HoldNotFoundError,
    HoldOverageError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    ReferralError,
    RefundError,
    SpendLimitExceededError,
    ValidationError,
)

__all__ = [
    "MUTATION_REFUSALS",
    "REFUSALS",
    "REPLY_STATUSES",
    "SHARED_ARGS",
    "SHARED_KEYS",
    "SPECS",
    "Context",
    "Header",
    "ScriptSpec",
    "Shared",
    "parse_header",
    "refusal",
]

SHARED_KEYS = (
    "balance",
    "ledger",
    "meta",
    "idempotency",
    "idempotency_previous",
    "holds",
    "hold_expiry",
    "lots",
    "lot_order",
    "lot_expiry",
)
"""KEYS[1..10], in this order, for every script (see lua/prelude.lua; 8 to 10 are the
credit lots of lua/lots.lua, which the prelude includes); the names are
:class:`~.keys.AccountKeys` attributes, as are a spec's ``extra_keys``."""

SHARED_ARGS = (
    "idempotency_key",
    "fingerprint",
    "idempotency_ttl",
    "auto_initialize",
    "default_credits",
    "app",
    "nonce",
    "legacy_fingerprint",
)
"""ARGV[1..8], in this order, for every script (see lua/prelude.lua)."""

Reply = Literal[
    "mutation",
    "hold",
    "init",
    "swept",
    "trimmed",
    "reconcile",
    "lots",
    "restored",
    "revoke",
    "allocation",
    "balance",
    "rebuilt",
    "controls",
]

REPLY_STATUSES: Mapping[str, frozenset[str]] = {
    "mutation": frozenset({"ok"}),
    "hold": frozenset({"ok"}),
    "init": frozenset({"ok", "exists"}),
    "swept": frozenset({"swept"}),
    "trimmed": frozenset({"trimmed", "no_checkpoint", "moved"}),
    "reconcile": frozenset({"more", "ok", "mismatch", "stale", "repaired"}),
    "lots": frozenset({"lots"}),
    "restored": frozenset({"restored", "moved"}),
    "revoke": frozenset({"revoked"}),
    "allocation": frozenset({"allocated"}),
    "balance": frozenset({"balance"}),
    "rebuilt": frozenset({"rebuilt", "moved", "none"}),
    "controls": frozenset({"set"}),
}
"""The statuses of each reply shape that are results, not refusals."""


class Shared(NamedTuple):
    """ARGV[1..8] of one call. The client's part (ttl, auto-initialize, default credits,
    app) is the same for every call; the call's part is the key, fingerprints and nonce."""

    idempotency_key: str
    fingerprint: str
    idempotency_ttl: str
    auto_initialize: str
    default_credits: str
    app: str
    nonce: str
    legacy_fingerprint: str


class Context(NamedTuple):
    """What a refusal's typed error needs besides the script's reply."""

    account: str
    action: str | None = None
    entry_id: str | None = None
    idempotency_key: str | None = None
    amount_field: str = "amount"


_HOLD_STATE_NAMES = {"O": "open", "S": "settled", "R": "released", "E": "expired"}


def _overflow(c: Context, a: Sequence[str]) -> CreditsError:
    from . import validation as v

    return ValidationError(
        c.amount_field,
        f"the balance {a[0]} plus {a[1]} would leave the range of ±{v.MAX_CREDITS}",
    )


REFUSALS: Mapping[str, Callable[[Context, Sequence[str]], CreditsError]] = {
    "insufficient": lambda c, a: InsufficientCreditsError(
        c.account, int(a[0]), int(a[1]), c.action
    ),
    "closed": lambda c, a: AccountClosedError(c.account, c.action),
    "conflict": lambda c, a: IdempotencyConflictError(c.account, c.idempotency_key or ""),
    "overflow": _overflow,
    "not_found": lambda c, a: EntryNotFoundError(c.account, c.entry_id or ""),
    "not_refundable": lambda c, a: RefundError(
        c.account, c.entry_id or "", f"a {a[0] or 'missing'} entry is not refundable"
    ),
    "fully_refunded": lambda c, a: RefundError(
        c.account, c.entry_id or "", f"all {a[0]} credits were already refunded"
    ),
    "refund_exceeds": lambda c, a: RefundError(
        c.account,
        c.entry_id or "",
        f"only {a[0]} credits are left to refund",
        refundable=int(a[0]),
    ),
    "hold_not_found": lambda c, a: HoldNotFoundError(c.account, a[0]),
    "hold_expired": lambda c, a: HoldExpiredError(c.account, a[0]),
    "hold_closed": lambda c, a: HoldNotFoundError(c.account, a[0], _HOLD_STATE_NAMES[a[1]]),
    "overage": lambda c, a: HoldOverageError(c.account, c.entry_id or "", int(a[0]), int(a[1])),
    "expires_past": lambda c, a: ValidationError(
        "expires_at", "must be in the future (by the server's clock)"
    ),
    "spend_limit": lambda c, a: SpendLimitExceededError.from_window(
        c.account, a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5] if len(a) > 5 else None
    ),
    "referred_already": lambda c, a: ReferralError(
        c.account, "already_referred", f"account {c.account} was already referred by {a[0]}"
    ),
    "referral_capped": lambda c, a: ReferralError(
        c.account, "capped", f"account {c.account} reached its {a[0]} referral rewards this month"
    ),
    "replay_gone": lambda c, a: CreditsError(
        f"the entry {a[0]} this idempotency key produced is no longer in the ledger"
    ),
}
"""Refusal status -> the typed error a caller can act on (the reply's values after the
status as text)."""

MUTATION_REFUSALS = ("conflict", "replay_gone")
"""What every keyed mutation may answer (prelude.lua's idempotency lookup)."""


def refusal(status: str, values: Sequence[Any], context: Context) -> CreditsError:
    """The typed error for a refusal ``status`` with the reply's following ``values``."""
    make = REFUSALS.get(status)
    if make is None:
        return CreditsError(f"unexpected script reply {status!r}")
    return make(context, [v.decode() if type(v) is bytes else str(v) for v in values])


@dataclass(frozen=True)
class ScriptSpec:
    """One script's declaration. ``name`` is its file (``lua/<name>.lua``)."""

    name: str
    args: tuple[str, ...]
    """Its own ARGV, ARGV[9] on, by name."""
    reply: Reply
    refusals: tuple[str, ...] = ()
    """Statuses it may answer instead of a result (keys of REFUSALS)."""
    fingerprint: tuple[str, ...] | None = None
    """The args that decide the effect (in ``args`` order); None: all of them. An
    operation whose default key names what it closes (settle, release, refund) leaves out
    reason and metadata, so a webhook's second delivery with another reason replays."""
    extra_keys: tuple[str, ...] = ()
    """KEYS after the ten shared ones (e.g. the refunds hash)."""
    keyed: bool = True
    """Carries an idempotency key (False: maintenance, safe to repeat as is)."""
    operation: str = ""
    """The operation's name (errors, and the fingerprint's first part); default: ``name``."""
    _positions: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for status in self.refusals:
            if status not in REFUSALS:
                raise ValueError(f"{self.name}: refusal {status!r} has no typed error")
        chosen = self.args if self.fingerprint is None else self.fingerprint
        if not set(chosen) <= set(self.args):
            raise ValueError(f"{self.name}: fingerprint names unknown arguments")
        object.__setattr__(self, "_positions", {n: i for i, n in enumerate(self.args)})
        if not self.operation:
            object.__setattr__(self, "operation", self.name)

    @property
    def keys(self) -> tuple[str, ...]:
        return (*SHARED_KEYS, *self.extra_keys)

    @property
    def argv(self) -> tuple[str, ...]:
        return (*SHARED_ARGS, *self.args)

    @property
    def fingerprint_args(self) -> tuple[str, ...]:
        return self.args if self.fingerprint is None else self.fingerprint

    def values(self, **args: str) -> tuple[str, ...]:
        """The script's own ARGV, in order, from keyword arguments (all of them)."""
        if args.keys() != self._positions.keys():
            missing = sorted(self._positions.keys() - args.keys())
            extra = sorted(args.keys() - self._positions.keys())
            raise TypeError(f"{self.name}: missing {missing}, unknown {extra}")
        return tuple(args[name] for name in self.args)

    def fingerprint_parts(self, values: Sequence[str]) -> tuple[str, ...]:
        """The values that form the fingerprint, from :meth:`values`' output."""
        if self.fingerprint is None:
            return tuple(values)
        return tuple(values[self._positions[n]] for n in self.fingerprint)


_CONTROLS = ("controls", "alerts")
"""KEYS after the shared ten of every script that spends or gives back: the account's
controls hash and alert outbox (lua/prelude.lua, ``controls``)."""


def _mutation(name: str, args: tuple[str, ...], *refusals: str, **options: Any) -> ScriptSpec:
    return ScriptSpec(name, args, "mutation", (*refusals, *MUTATION_REFUSALS), **options)


SPECS: Mapping[str, ScriptSpec] = {
    spec.name: spec
    for spec in (
        ScriptSpec(
            "initialize",
            ("credits", "reason"),
            "init",
            ("overflow",),
            keyed=False,
            operation="initialize_user",
        ),
        _mutation(
            "debit",
            ("amount", "action", "reason", "metadata"),
            "closed",
            "insufficient",
            "spend_limit",
            extra_keys=_CONTROLS,
        ),
        _mutation(
            "credit",
            ("amount", "source", "reason", "metadata", "priority", "expires_ms"),
            "overflow",
            "expires_past",
            extra_keys=("controls",),
        ),
        _mutation(
            "adjust",
            ("delta", "allow_overdraft", "action", "reason", "metadata"),
            "overflow",
            "insufficient",
            extra_keys=_CONTROLS,
        ),
        _mutation(
            "refund",
            ("entry_id", "amount", "reason", "metadata"),
            "not_found",
            "not_refundable",
            "fully_refunded",
            "refund_exceeds",
            "overflow",
            fingerprint=("entry_id", "amount"),
            extra_keys=("refunds", *_CONTROLS),
        ),
        ScriptSpec(
            "reserve",
            ("amount", "action", "ttl_ms", "reason", "metadata"),
            "hold",
            ("closed", "insufficient", "spend_limit", *MUTATION_REFUSALS),
            extra_keys=_CONTROLS,
        ),
        _mutation(
            "settle",
            ("hold_id", "actual", "allow_overage", "reason", "metadata"),
            "hold_not_found",
            "hold_expired",
            "hold_closed",
            "overage",
            "insufficient",
            "spend_limit",
            fingerprint=("hold_id", "actual", "allow_overage"),
            extra_keys=_CONTROLS,
        ),
        _mutation(
            "release",
            ("hold_id", "reason", "metadata"),
            "hold_not_found",
            "hold_expired",
            "hold_closed",
            fingerprint=("hold_id",),
            extra_keys=_CONTROLS,
        ),
        _mutation("close", ("reason", "metadata"), operation="close_account"),
        _mutation(
            "referral",
            ("role", "other", "amount", "expires_ms", "cap", "reason", "metadata"),
            "referred_already",
            "referral_capped",
            "expires_past",
            "overflow",
            fingerprint=("role", "other", "amount", "expires_ms"),
            extra_keys=("referrals", "controls"),
            operation="reward_referral",
        ),
        ScriptSpec(
            "sweep",
            ("limit",),
            "swept",
            keyed=False,
            operation="sweep_expired",
            extra_keys=("controls",),
        ),
        ScriptSpec(
            "trim",
            ("prior", "last", "sum", "count", "lots", "drop", "n", "minid"),
            "trimmed",
            keyed=False,
        ),
        ScriptSpec(
            "reconcile",
            ("start", "sum", "count", "chunk", "mode", "scope"),
            "reconcile",
            keyed=False,
            extra_keys=("refunds",),
        ),
        ScriptSpec("grants", ("limit",), "lots", keyed=False, extra_keys=("controls",)),
        # Money in (billing/): lots keyed once ever by a payment, a period or a caller's key.
        _mutation(
            "purchase",
            ("amount", "payment_id", "source", "reason", "metadata", "priority", "expires_ms"),
            "overflow",
            "expires_past",
            fingerprint=("amount", "payment_id", "source", "priority", "expires_ms"),
            extra_keys=("once", "controls"),
        ),
        ScriptSpec(
            "revoke",
            ("grant_id", "amount", "reason", "metadata", "once"),
            "revoke",
            ("not_found", *MUTATION_REFUSALS),
            fingerprint=("grant_id", "amount"),
            extra_keys=("once", "controls"),
        ),
        ScriptSpec(
            "allocate",
            (
                "amount",
                "period_id",
                "expires_ms",
                "rollover_cap",
                "source",
                "priority",
                "reason",
                "metadata",
            ),
            "allocation",
            ("overflow", "expires_past", *MUTATION_REFUSALS),
            fingerprint=("amount", "period_id", "expires_ms", "rollover_cap", "source", "priority"),
            extra_keys=("once", "controls"),
        ),
        ScriptSpec("balance", (), "balance", keyed=False, operation="get_balance"),
        ScriptSpec(
            "controls_rebuild",
            ("last_id", "day", "spent_day", "month", "spent_month"),
            "rebuilt",
            keyed=False,
            extra_keys=("controls",),
            operation="reconcile",
        ),
        ScriptSpec(
            "set_tier",
            ("tier", "daily", "monthly", "low", "drop"),
            "controls",
            keyed=False,
            extra_keys=("controls",),
            operation="set_tier",
        ),
        ScriptSpec(
            "plan_tier",
            ("tier", "daily", "monthly", "low", "period", "start"),
            "controls",
            keyed=False,
            extra_keys=("controls", "plan_tiers"),
            operation="set_plan_tier",
        ),
        ScriptSpec(
            "member_limit",
            ("member", "daily", "monthly"),
            "controls",
            keyed=False,
            extra_keys=("controls",),
            operation="set_member_limit",
        ),
        ScriptSpec(
            "member_windows_rebuild",
            ("last_id", "day", "month", "records"),
            "rebuilt",
            keyed=False,
            extra_keys=("controls",),
            operation="reconcile",
        ),
        ScriptSpec(
            "controls_mark",
            (),
            "controls",
            keyed=False,
            extra_keys=("controls",),
            operation="reconcile",
        ),
        # The full repair's rebuild of the alert arming and the referral marks
        # (controls_repair.py): derived state, from the ledger.
        ScriptSpec(
            "alerts_rebuild",
            ("last_id", "low", "action", "entry", "balance"),
            "rebuilt",
            keyed=False,
            extra_keys=_CONTROLS,
            operation="reconcile",
        ),
        ScriptSpec(
            "referral_restore",
            ("records", "rewards"),
            "restored",
            keyed=False,
            extra_keys=("referrals",),
            operation="reconcile",
        ),
        ScriptSpec("lots_dump", (), "lots", keyed=False, operation="reconcile"),
        ScriptSpec(
            "lots_restore",
            ("last_id", "records", "marks"),
            "restored",
            keyed=False,
            operation="reconcile",
        ),
        ScriptSpec(
            "once_restore",
            ("records",),
            "restored",
            keyed=False,
            operation="reconcile",
            extra_keys=("once",),
        ),
    )
}
"""Every script, by name."""


# -- the Lua side: each file's header repeats its declaration -------------------------------

_HEADER = re.compile(r"^--:\s*(keys|argv|refusals|reply)\b(.*)$", re.MULTILINE)
_ARGV_USE = re.compile(r"\bARGV\[(\d+)\]")
_KEYS_USE = re.compile(r"\bKEYS\[(\d+)\]")
_STATUS = re.compile(r"return\s*\{\s*'([a-z_]+)'")


class Header(NamedTuple):
    """What a Lua file declares and uses (see :func:`parse_header`)."""

    keys: tuple[str, ...]
    argv: tuple[str, ...]
    refusals: tuple[str, ...]
    reply: str
    argv_used: int
    keys_used: int
    statuses: frozenset[str]


def parse_header(source: str) -> Header:
    """Read a script file's ``--: keys|argv|refusals|reply`` lines (``keys`` lists only
    the KEYS after the shared ten, ``argv`` only the ARGV after the shared eight), the
    highest ARGV/KEYS index its code uses and the statuses it returns."""
    found: dict[str, tuple[str, ...]] = {}
    for kind, rest in _HEADER.findall(source):
        found[kind] = tuple(rest.split())
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    return Header(
        keys=found.get("keys", ()),
        argv=found.get("argv", ()),
        refusals=found.get("refusals", ()),
        reply=" ".join(found.get("reply", ())),
        argv_used=max((int(n) for n in _ARGV_USE.findall(code)), default=0),
        keys_used=max((int(n) for n in _KEYS_USE.findall(code)), default=0),
        statuses=frozenset(_STATUS.findall(code)),
    )
