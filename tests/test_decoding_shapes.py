"""The decoders take replies as redis-py gives them (bytes) and as upstash-redis gives
them (str, after base64), and produce the same typed results."""

from __future__ import annotations

from typing import Any

import pytest

from sparked_credits import HoldState
from sparked_credits._core.operations import Extras, Operations
from sparked_credits._core.options import make_options

ENTRY = ["debit", "-10", "90", "chat_message", "app.sparked.world", "", "", "k1", '{"m": 1}']
FIELDS = ["type", "delta", "balance", "action", "app", "reason", "ref", "idem", "meta"]


def _as_bytes(value: Any) -> Any:
    if isinstance(value, list):
        return [_as_bytes(v) for v in value]
    return value.encode() if isinstance(value, str) else value


@pytest.mark.parametrize("shape", [lambda v: v, _as_bytes], ids=["str", "bytes"])
def test_every_reply_shape_decodes_alike(shape: Any) -> None:
    ops = Operations(make_options())
    debit = ops.debit("user_1", 10, action="chat_message", extras=Extras(idempotency_key="k1"))
    result = debit.decode(shape(["ok", "0", "1700000000000-0", *ENTRY, "1699999999999-0:10"]))
    assert (result.balance, result.entry.delta, result.replayed) == (90, -10, False)
    assert result.entry.metadata == {"m": 1}
    assert result.entry.lots == "1699999999999-0:10"

    flat = [x for pair in zip(FIELDS, ENTRY, strict=True) for x in pair]
    entries = ops.read_entries("user_1", "-", "+", 2, True).decode(
        shape([["1700000000001-0", flat], ["1700000000000-0", flat]])
    )
    assert [e.id for e in entries] == ["1700000000001-0", "1700000000000-0"]
    assert entries[0].balance_after == 90

    reserve = ops.reserve(
        "user_1",
        10,
        action="model_training",
        usage=None,
        ttl=60,
        extras=Extras(idempotency_key="k2"),
    )
    hold_entry = ["reserve", "-10", "90", "model_training", "", "", "", "k2", ""]
    hold = reserve.decode(
        shape(
            [
                "ok",
                "0",
                "1700000000002-0",
                *hold_entry,
                "_:10",
                "O|10|1700000060000|model_training|",
            ]
        )
    )
    assert hold.state is HoldState.OPEN
    assert hold.amount == 10
    assert hold.expires_at is not None
    assert hold.entry.lots == "_:10"

    assert ops.get_balance("user_1").decode(shape(["balance", "42"])) == 42
    assert ops.get_balance("user_1").decode(shape(["balance"])) == 0
    scan = ops.scan_accounts("holdexp", "sweep_expired_holds")
    accounts = scan.decode(shape(["holdexp:{user_1}", "holdexp:{u2}"]))
    assert accounts == ["u2", "user_1"]


@pytest.mark.parametrize(
    "values",
    [
        ("debit", "-10", "90", "chat_message", "app.sparked.world", "", "", "k1", ""),
        ("refund", "10", "100", "video_generation", "studio", "failed", "1-0", "r", '{"a":[1]}'),
        ("init", "0", "0", "initialize", "", "", "", "", ""),
        ("adjust", "-9007199254740991", "-9007199254740991", "", "", "x", "", "", ""),
        ("lot_expire", "-5", "95", "", "", "", "", "", ""),
    ],
)
@pytest.mark.parametrize("shape", [lambda v: v, _as_bytes], ids=["str", "bytes"])
def test_one_decoder_for_replies_and_stream_entries(values: tuple[str, ...], shape: Any) -> None:
    """A script's reply and the same entry read back by XRANGE decode to equal entries,
    whether the client gave bytes or str; an unknown type is kept as its text."""
    from sparked_credits._core import decoding

    reply = shape(["ok", "0", "1700000000000-5", *values])
    result = decoding.mutation_decoder("user_1")(reply)
    flat = [x for pair in zip(FIELDS, values, strict=True) for x in pair]
    read = decoding.entry_from_fields(shape("1700000000000-5"), shape(flat))
    reordered = decoding.entry_from_fields(
        "1700000000000-5", dict(zip(FIELDS, values, strict=True))
    )
    assert result.entry == read == reordered
    assert result.entry.model_dump(mode="json") == read.model_dump(mode="json")
    assert result.balance == read.balance_after


def test_decoding_uses_no_pydantic_internals() -> None:
    from pathlib import Path

    from sparked_credits._core import decoding

    source = Path(decoding.__file__).read_text()
    assert "__pydantic_" not in source
    assert "object.__new__" not in source


def test_an_entry_not_in_the_sdks_format_is_refused() -> None:
    """An entry of a type this version does not know keeps its raw type; one whose values
    are not what the scripts write is validated (and refused)."""
    from pydantic import ValidationError as PydanticValidationError

    from sparked_credits._core import decoding

    entry = decoding.entry_from_values("1-0", ["deduct", "-1", "1", "", "", "", "", "", ""])
    assert entry.type == "deduct"
    with pytest.raises(PydanticValidationError):
        decoding.entry_from_values("1-0", ["debit", "minus one", "1", "", "", "", "", "", ""])


def test_foreign_entry_in_history_is_a_credits_error(redis_url: str) -> None:
    """An entry another writer added in another shape is reported by id, as a CreditsError."""
    import redis

    from sparked_credits import CreditsClient, CreditsError

    raw = redis.Redis.from_url(redis_url)
    foreign = raw.xadd("txs:user_ts", {"type": "deduct", "amount": "10"}).decode()
    raw.close()
    with CreditsClient(redis_url) as client, pytest.raises(CreditsError, match=foreign) as info:
        client.history("user_ts")
    assert "delta" in str(info.value)  # an unknown type is kept raw; a missing delta is not
