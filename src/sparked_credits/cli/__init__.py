"""The ``sparked-credits`` console script (and ``python -m sparked_credits``).

The command line is built on click and rich, which a library used inside route handlers
should not force on anyone: they come with the ``cli`` extra. Without them, ``demo`` still
runs (plain output), so ``pip install 'sparked-credits[memory]' && sparked-credits demo``
works; any other command says which extra to install.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

INSTALL_HINT = "pip install 'sparked-credits[cli]'"


def _has_cli_extra() -> bool:
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` anywhere in ``args``."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _command(args: list[str]) -> str | None:
    """The first word that is not an option or an option's value."""
    rest = iter(args)
    for arg in rest:
        if arg in ("--url", "--token", "--app"):
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _demo_without_cli(args: list[str]) -> int:
    from ..errors import CreditsError
    from .demo import DemoFailure, run_demo

    try:
        run_demo(_option(args, "--url") or "memory://demo")
    except DemoFailure as exc:
        print(f"error: demo failed: {exc}", file=sys.stderr)
        return 1
    except CreditsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if _has_cli_extra():
        from .commands import main as cli_main

        return cli_main(args)
    if _command(args) == "demo":
        return _demo_without_cli(args)
    print(
        f"the sparked-credits command line needs click and rich: {INSTALL_HINT} "
        "(only 'sparked-credits demo' runs without them)",
        file=sys.stderr,
    )
    return 2
