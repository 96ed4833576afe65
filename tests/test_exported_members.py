"""Everything the package root defines is in ``__all__`` and the reverse (as httpx checks),
the version has one source, and the command line's optional dependencies behave."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import types

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
from sparked_credits.console import main
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
