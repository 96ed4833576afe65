"""The block sums (lua/prelude.lua, ledger_block_add) recomputed from the ledger."""

from __future__ import annotations

from collections.abc import Mapping

from sparked_credits._core.ledger_format import BLOCK_SIZE

BLOCK = BLOCK_SIZE


def check_blocks(meta: Mapping[str, str], deltas: list[int]) -> None:
    """``meta`` is the account's meta hash, ``deltas`` the entries still in its stream, in
    order. n counts every entry (trimmed ones too); every closed block is folded into the
    base; the open block, when its entries are still in the stream, holds their sum; the
    folded base and the open block add up to the ledger's sum."""
    base_sum, base_count = int(meta.get("base_sum", 0)), int(meta.get("base_count", 0))
    n = int(meta["n"])
    assert n == base_count + len(deltas), "n does not count every entry"
    folded, folded_n = int(meta.get("bf", 0)), int(meta.get("bfn", 0))
    assert 0 <= folded_n <= n
    # Each block folds into the base as it closes: no closed block stands apart.
    assert folded_n >= n // BLOCK * BLOCK, "a closed block was not folded"
    assert not [name for name in meta if name.startswith("b:")], "a per-block field"
    by_ordinal = {base_count + i + 1: d for i, d in enumerate(deltas)}

    def known(first: int, last: int) -> int | None:
        """Sum of ordinals first..last, when none of them was trimmed."""
        if first <= base_count:
            return None
        return sum(by_ordinal[o] for o in range(first, last + 1))

    total = folded
    open_sum = int(meta.get("bo", 0))
    expect = known(folded_n + 1, n)
    assert expect is None or open_sum == expect, f"open block: {open_sum} != {expect}"
    total += open_sum
    if folded_n >= base_count:
        present = sum(by_ordinal[o] for o in range(base_count + 1, folded_n + 1))
        assert folded == base_sum + present, "the folded base is not the ledger's"
    assert total == base_sum + sum(deltas), "the block sums do not add up to the ledger"
