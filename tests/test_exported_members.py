"""Everything the package root defines is in ``__all__`` and the reverse (as httpx checks),
the version has one source, and the command line's optional dependencies behave."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import types

import pytest

import sparked_credits

INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def test_all_imports_are_exported() -> None:
    members = {
        name
        for name, value in vars(sparked_credits).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert len(sparked_credits.__all__) == len(set(sparked_credits.__all__))
    assert set(sparked_credits.__all__) == members


def test_report_models_are_exported() -> None:
    for name in ("ReconcileResult", "ReconcileReport", "TrimResult", "UsageReport"):
        assert name in sparked_credits.__all__


def test_one_version_source() -> None:
    assert sparked_credits.__version__ == importlib.metadata.version("sparked-credits")


_WITHOUT_CLICK = """
import sys
sys.modules["click"] = None  # as if the cli extra were not installed
from sparked_credits.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run_without_click(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_CLICK, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_library_imports_without_the_cli_extra() -> None:
    code = (
        "import sys; sys.modules['click'] = None; sys.modules['rich'] = None\n"
        "import sparked_credits\n"
        "c = sparked_credits.CreditsClient('memory://x'); c.initialize_user('u'); c.close()\n"
        "assert 'click' not in [m for m in sys.modules if sys.modules[m] is not None]"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_demo_runs_without_the_cli_extra() -> None:
    done = _run_without_click("demo")
    assert done.returncode == 0, done.stderr
    assert "all checks passed" in done.stdout
    assert _run_without_click("--url", "memory://other", "demo").returncode == 0


def test_other_commands_name_the_extra_without_it() -> None:
    done = _run_without_click("balance", "user_1")
    assert done.returncode == 2
    assert "pip install 'sparked-credits[cli]'" in done.stderr


@pytest.mark.parametrize(
    "path",
    [
        "sparked_credits.errors",
        "sparked_credits.models",
        "sparked_credits.reports",
        "sparked_credits.pricing",
        "sparked_credits.clerk",
        "sparked_credits.integrations.fastapi",
        "sparked_credits.client",
        "sparked_credits.async_client",
    ],
)
def test_public_import_paths_keep_working(path: str) -> None:
    """The modules users import today; what users never import lives in ``_core``."""
    module = importlib.import_module(path)
    assert module.__name__ == path


def test_client_names_at_their_old_paths() -> None:
    from sparked_credits.async_client import AsyncCreditsClient
    from sparked_credits.client import CreditsClient
    from sparked_credits.errors import InsufficientCreditsError, TokenVerificationError
    from sparked_credits.models import LedgerEntry, MutationResult

    assert {CreditsClient.__name__, AsyncCreditsClient.__name__} == {
        "CreditsClient",
        "AsyncCreditsClient",
    }
    for cls in (InsufficientCreditsError, TokenVerificationError, LedgerEntry, MutationResult):
        assert cls.__module__.startswith("sparked_credits.")
