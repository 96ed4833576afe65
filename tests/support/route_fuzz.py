"""Schemathesis over an app's routes: no 5xx from any input, and a 4xx changes nothing.

One place for what the example app's route tests assert of the routes they add: both
generation modes (inputs the schema allows, and inputs it refuses), a typed error body on
every 4xx, and the store unchanged by a refusal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode


def fuzz_routes(
    app: Any,
    paths: Collection[str],
    *,
    headers: Mapping[str, str],
    state: Callable[[], object],
    operations: int,
    max_examples: int = 10,
) -> None:
    """Fuzz every operation of ``app`` whose path is in ``paths`` (there must be
    ``operations`` of them), sending ``headers``; ``state()`` reads what a refusal must
    leave unchanged."""
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = [r.ok() for r in api.get_all_operations() if r.ok().path in paths]
    assert len(found) == operations, [op.path for op in found]
    for operation in found:
        _check(operation, GenerationMode.POSITIVE, headers, state, max_examples)()
        with contextlib.suppress(Unsatisfiable):
            _check(operation, GenerationMode.NEGATIVE, headers, state, max_examples)()


def _check(
    operation: Any,
    mode: Any,
    headers: Mapping[str, str],
    state: Callable[[], object],
    max_examples: int,
) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        case.headers = {**(case.headers or {}), **headers}
        before = state()
        response = case.call()
        where = (case.method, case.path, case.body, response.text[:300])
        assert response.status_code < 500, where
        if 400 <= response.status_code < 500:
            assert isinstance(response.json().get("error"), str), where
            assert state() == before, where

    return check
