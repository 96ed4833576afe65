"""Reading a redis-server's append-only file: what one script wrote, command by command.

A script's effects reach the AOF as one MULTI ... EXEC block of plain commands with their
outcomes fixed (XADD with the id it got, PEXPIREAT with an absolute time). Replaying the
first k of them reproduces exactly what a server that lost the rest of the block (a torn
MULTI after a power loss) would hold.
"""

from __future__ import annotations

from pathlib import Path

Command = tuple[bytes, ...]


def aof_path(directory: str) -> Path:
    """The file new writes go to: ``appendonly.aof`` (Redis < 7), or the newest
    incremental file of the multi-part AOF (Redis >= 7, Valkey)."""
    single = Path(directory) / "appendonly.aof"
    if single.is_file():
        return single
    parts = sorted(
        (Path(directory) / "appendonlydir").glob("*.incr.aof"),
        key=lambda p: int(p.name.split(".")[-3]),
    )
    if not parts:
        raise FileNotFoundError(f"no append-only file in {directory}")
    return parts[-1]


def parse(data: bytes) -> list[tuple[int, int, Command]]:
    """(start offset, end offset, command) for each complete RESP command in ``data``."""
    out: list[tuple[int, int, Command]] = []
    pos = 0
    while pos < len(data):
        start = pos
        if data[pos : pos + 1] != b"*":
            raise ValueError(f"not a RESP array at offset {pos}")
        end = data.index(b"\r\n", pos)
        n = int(data[pos + 1 : end])
        pos = end + 2
        parts: list[bytes] = []
        for _ in range(n):
            end = data.index(b"\r\n", pos)
            size = int(data[pos + 1 : end])
            pos = end + 2
            parts.append(data[pos : pos + size])
            pos += size + 2
        out.append((start, pos, tuple(parts)))
    return out


def writes_since(directory: str, offset: int) -> list[Command]:
    """The data commands appended after ``offset`` (MULTI, EXEC and SELECT left out)."""
    data = aof_path(directory).read_bytes()[offset:]
    return [
        cmd for _, _, cmd in parse(data) if cmd[0].upper() not in (b"MULTI", b"EXEC", b"SELECT")
    ]


def size(directory: str) -> int:
    return aof_path(directory).stat().st_size
