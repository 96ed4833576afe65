"""What every command module of the command line shares: the consoles, the client built
from the group's options, and the one way an SDK error becomes exit code 2.

Kept apart from :mod:`.commands` (which builds the group and registers every module's
commands), so that a command module imports this and never the group: no circle.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console

from .._core.config import archive_from_env
from ..client import CreditsClient
from ..errors import ConfigurationError, CreditsError

__all__ = ["Failed", "err", "out"]

F = TypeVar("F", bound=Callable[..., Any])
out = Console()
err = Console(stderr=True)


class Failed(click.ClickException):
    """A check failed (exit 1), as opposed to an error (exit 2)."""

    exit_code = 1


def _client(ctx: click.Context) -> CreditsClient:
    opts = ctx.obj
    if opts["url"]:
        return CreditsClient(
            opts["url"], token=opts["token"], app=opts["app"], archive=archive_from_env()
        )
    try:
        return CreditsClient.from_env(app=opts["app"])
    except ConfigurationError as exc:
        raise ConfigurationError(
            "no storage configured: pass --url redis://localhost:6379/0 (or --url memory://), "
            "or set REDIS_URL (or UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN)"
        ) from exc


def _errors_exit_2(fn: F) -> F:
    """Report CreditsError as one line on stderr with exit code 2, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CreditsError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _print_json(value: BaseModel | dict[str, Any]) -> None:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    click.echo(json.dumps(data, indent=2))
