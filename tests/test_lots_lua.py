"""lua/lots.lua on a real redis-server, step by step against the pure model (lots.py).

A small driver script (prelude + lots + driver) calls one lot function per EVAL, so the
consumption order, catch-up, owed credits, give-back and lapse are checked in Redis itself,
independently of the mutation scripts that use them.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparked_credits._core.lots import IMPLICIT, LotBook, decode_draws, order_key, parse_record
from sparked_credits._core.scripts import _PRELUDE

DRIVER = """
local op = ARGV[7]
local bal = tonumber(redis.call('GET', K_BAL) or '0')
lots_catch_up(bal)
if op == 'open' then
  local amount = tonumber(ARGV[9])
  local expires = nil
  if ARGV[11] ~= '' then expires = tonumber(ARGV[11]) end
  lots_open(ARGV[8], amount, tonumber(ARGV[10]), expires, ARGV[12], bal)
  redis.call('SET', K_BAL, fmt(bal + amount))
  lots_apply()
  return {'ok', ''}
elseif op == 'draw' then
  local amount = tonumber(ARGV[8])
  local draws = lots_draw(amount)
  redis.call('SET', K_BAL, fmt(bal - amount))
  lots_apply()
  return {'ok', lots_encode(draws)}
elseif op == 'back' then
  local back, lapsed = lots_give_back(lots_decode(ARGV[8]), tonumber(ARGV[9]),
                                      tonumber(ARGV[10]), lots_owed(bal))
  local total = 0
  for i = 1, #back do total = total + back[i][2] end
  redis.call('SET', K_BAL, fmt(bal + total))
  lots_lapse_all(lapsed, bal + total)
  lots_apply()
  return {'ok', lots_encode(back), fmt(#lapsed)}
elseif op == 'expire' then
  return {'ok', fmt(lots_expire_due(tonumber(ARGV[8])))}
elseif op == 'old_debit' then
  redis.call('SET', K_BAL, fmt(bal - tonumber(ARGV[8])))
  return {'ok', ''}
elseif op == 'records' then
  lots_apply()
  local out = lots_open_records()
  table.insert(out, 1, fmt(lots_tracked()))
  return out
end
return {'bad_op'}
"""

KEYS = [
    "balance:{a}",
    "txs:{a}",
    "account:{a}",
    "idem:{a}:current",
    "idem:{a}:previous",
    "holds:{a}",
    "holdexp:{a}",
    "lots:{a}",
    "lotq:{a}",
    "lotexp:{a}",
]

FAR = 2**44  # an expiry far in the future (ms)


class Harness:
    def __init__(self, raw: redis.Redis) -> None:
        self.raw = raw
        source = _PRELUDE + "\n" + DRIVER
        self.script = raw.register_script(source)
        self.ids = (f"{1700000000000 + i}-0" for i in itertools.count())

    def call(self, op: str, *args: object) -> list[Any]:
        argv = ["", "", "1000", "0", "0", "app.test", op, *[str(a) for a in args]]
        return [x.decode() if isinstance(x, bytes) else x for x in self.script(KEYS, argv)]

    def open(self, amount: int, priority: int = 50, expires: int | None = None) -> str:
        lot_id = next(self.ids)
        self.call("open", lot_id, amount, priority, "" if expires is None else expires, "grant")
        return lot_id

    def records(self) -> tuple[int, list[tuple[str, str]]]:
        out = self.call("records")
        return int(out[0]), list(zip(out[1::2], out[2::2], strict=True))

    def now_ms(self) -> int:
        seconds, micros = self.raw.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def balance(self) -> int:
        return int(self.raw.get("balance:{a}") or 0)


@pytest.fixture
def harness(raw_redis: redis.Redis) -> Harness:
    return Harness(raw_redis)


def test_consumption_order_priority_then_expiry_then_age(harness: Harness) -> None:
    never_old = harness.open(10)
    soon = harness.open(10, expires=FAR)
    sooner = harness.open(10, expires=FAR - 1000)
    first = harness.open(10, priority=10)
    never_new = harness.open(10)
    _, records = harness.records()
    assert [lot_id for lot_id, _ in records] == [first, sooner, soon, never_old, never_new]
    assert harness.call("draw", 35)[1] == f"{first}:10,{sooner}:10,{soon}:10,{never_old}:5"
    tracked, records = harness.records()
    assert tracked == 15 == harness.balance()
    assert [parse_record(i, r).remaining for i, r in records] == [5, 10]


def test_implicit_lot_is_last_and_catch_up_charges_lots(harness: Harness) -> None:
    harness.raw.set("balance:{a}", 30)  # credits from before lots: the implicit lot
    lot = harness.open(20)
    assert harness.call("draw", 25)[1] == f"{lot}:20,{IMPLICIT}:5"
    lot2 = harness.open(10)
    harness.call("old_debit", 30)  # an older SDK's debit: lots untouched, balance drops
    tracked, _ = harness.records()  # the next script charges the 30 to the lots in order
    assert harness.balance() == 5
    assert tracked == 5
    assert harness.call("draw", 5)[1] == f"{lot2}:5"


def test_overdraft_is_owed_and_paid_first_by_the_next_lot(harness: Harness) -> None:
    harness.open(10)
    assert harness.call("draw", 25)[1].endswith(f"{IMPLICIT}:15")
    assert harness.balance() == -15
    lot = harness.open(40, priority=90)
    tracked, records = harness.records()
    assert tracked == 25 == harness.balance()
    assert records == [(lot, "25|40||90|grant")]


def test_give_back_last_drawn_first_and_expired_lot_lapses(harness: Harness) -> None:
    now_ms = harness.now_ms()
    promo = harness.open(50, expires=now_ms + 300)
    base = harness.open(100)
    draws = harness.call("draw", 70)[1]
    assert draws == f"{promo}:50,{base}:20"
    # A partial give-back of 30 after 10 given back already: base first (10 left), promo.
    out = harness.call("back", draws, 30, 10)
    assert out[1] == f"{base}:10,{promo}:20"
    assert out[2] == "0"
    time.sleep(0.4)
    out = harness.call("back", draws, 10, 40)  # promo is past expiry: lapses at once
    assert out[1] == f"{promo}:10"
    assert out[2] == "1"
    tracked, records = harness.records()
    assert records == [(base, "90|100||50|grant")]  # 100 - 20 drawn + 10 given back
    assert tracked == 90 == harness.balance()
    entries = harness.raw.xrange("txs:{a}")
    assert [e[1][b"type"] for e in entries] == [b"lot_expire"]
    assert entries[0][1][b"delta"] == b"-30"


def test_expire_due_is_bounded_and_recorded(harness: Harness) -> None:
    now_ms = harness.now_ms()
    for _ in range(20):
        harness.open(1, expires=now_ms + 200)
    keep = harness.open(5)
    time.sleep(0.3)
    assert harness.call("expire", 16)[1] == "16"
    assert harness.call("expire", 16)[1] == "4"
    assert harness.call("expire", 16)[1] == "0"
    tracked, records = harness.records()
    assert [i for i, _ in records] == [keep]
    assert tracked == 5 == harness.balance()
    assert harness.raw.xlen("txs:{a}") == 20


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("open"),
            st.integers(1, 60),
            st.sampled_from([0, 50, 100]),
            st.sampled_from([None, FAR, FAR - 5]),
        ),
        st.tuples(st.just("draw"), st.integers(1, 80)),
        st.tuples(st.just("old_debit"), st.integers(1, 40)),
        st.tuples(st.just("back"), st.integers(0, 5), st.integers(1, 50)),
    ),
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops)
def test_lua_matches_model(raw_redis: redis.Redis, ops: list[tuple[Any, ...]]) -> None:
    raw_redis.flushall()
    h = Harness(raw_redis)
    book = LotBook()
    drawn: list[list[tuple[str, int]]] = []
    for op in ops:
        if op[0] == "open":
            _, amount, priority, expires = op
            lot_id = h.open(amount, priority, expires)
            book.open(lot_id, amount, priority, expires, "grant")
        elif op[0] == "draw":
            if book.balance < op[1]:
                continue
            got = decode_draws(h.call("draw", op[1])[1])
            assert got == book.draw(op[1])
            drawn.append(got)
        elif op[0] == "old_debit":
            h.call("old_debit", op[1])
            book.balance -= op[1]
        elif op[0] == "back" and drawn:
            draws = drawn[op[1] % len(drawn)]
            amount = min(op[2], sum(n for _, n in draws))
            got = h.call("back", ",".join(f"{i}:{n}" for i, n in draws), amount, 0)
            back, _ = book.give_back(draws, amount)
            assert decode_draws(got[1]) == back
        tracked, records = h.records()
        book.catch_up()
        assert h.balance() == book.balance
        assert tracked == book.tracked
        expected = [(lot.id, lot.record()) for lot in sorted(book.ordered(), key=order_key)]
        assert records == expected
        assert all(parse_record(i, r).remaining >= 0 for i, r in records)
