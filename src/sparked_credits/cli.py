"""The ``sparked-credits`` command line (also ``python -m sparked_credits``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .demo import DemoFailure, run_demo
from .errors import CreditsError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparked-credits", description="Shared prepaid credit balances kept in Redis."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="run the setup guide's integration check (memory:// by default)"
    )
    demo.add_argument(
        "--url",
        default="memory://demo",
        help="storage URL (memory://, redis://host:6379/0, ...); default memory://demo",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        try:
            run_demo(args.url)
        except DemoFailure as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
        except CreditsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
