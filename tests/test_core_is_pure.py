"""The private core (``sparked_credits._core``) is pure: it imports no backend, client or
edge and no I/O library, and importing and using it opens no socket, starts no process and
writes no file (checked with an audit hook in a fresh interpreter)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import sparked_credits._core as core

CORE = Path(core.__file__).parent
PACKAGE = CORE.parent

# Inside the package: what the core may import (everything else is a backend, a client or
# an edge). Outside: any module not named below is fine (pydantic, hashlib, json, ...).
ALLOWED_INSIDE = {
    "sparked_credits._core",
    "sparked_credits.errors",
    "sparked_credits._core.validation",
    "sparked_credits.pricing",
    "sparked_credits.models",
    "sparked_credits.control_models",
    "sparked_credits.reports",
    "sparked_credits._core.steps",
    "sparked_credits._core.options",
    "sparked_credits._core.config",
    "sparked_credits._version",
}
FORBIDDEN_OUTSIDE = (
    "socket",
    "ssl",
    "http",
    "urllib.request",
    "subprocess",
    "asyncio",
    "selectors",
    "threading",
    "redis",
    "httpx",
    "upstash_redis",
    "fakeredis",
    "lupa",
    "click",
    "rich",
    "fastapi",
    "starlette",
    "jwt",
    "svix",
    "limits",
)


# Client libraries that do I/O; the core must not even load them (the standard library's own
# modules, such as threading, come along with pydantic and are not listed).
IO_LIBRARIES = (
    "redis",
    "httpx",
    "upstash_redis",
    "fakeredis",
    "lupa",
    "click",
    "rich",
    "fastapi",
    "starlette",
    "jwt",
    "svix",
    "limits",
    "hiredis",
    "anyio",
)


def _core_modules() -> list[str]:
    return sorted(f"sparked_credits._core.{m.name}" for m in pkgutil.iter_modules([str(CORE)]))


def _imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                found.update(
                    [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                )
            else:
                found.add(node.module or "")
    return found


def test_core_imports_no_backend_client_edge_or_io_library() -> None:
    assert _core_modules(), "the core has modules"
    bad: list[str] = []
    for path in sorted(CORE.glob("*.py")):
        module = "sparked_credits._core" + ("" if path.stem == "__init__" else f".{path.stem}")
        for name in _imports(path, module):
            if name.startswith("sparked_credits"):
                if not any(name == a or name.startswith(a + ".") for a in ALLOWED_INSIDE):
                    bad.append(f"{module} imports {name}")
            elif name.split(".")[0] in FORBIDDEN_OUTSIDE or name in FORBIDDEN_OUTSIDE:
                bad.append(f"{module} imports {name}")
    assert not bad, "\n".join(bad)


_PROBE = """
import json, sys
events = []
WATCH = ("socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.fork", "os.posix_spawn")
def hook(event, args):
    if event.startswith(WATCH):
        events.append(event)
    elif event == "open" and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        events.append(f"open {args[0]} {args[1]}")
sys.addaudithook(hook)
import importlib, importlib.util, os
# The package root imports the clients: load its module object without running it, so
# only what the core itself imports gets loaded.
spec = importlib.util.spec_from_file_location(
    "sparked_credits", os.path.join(sys.argv[3], "__init__.py"),
    submodule_search_locations=[sys.argv[3]],
)
sys.modules["sparked_credits"] = importlib.util.module_from_spec(spec)
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
from sparked_credits._core import protocol
spec = protocol.SPECS["debit"]
spec.values(amount="1", action="a", reason="", metadata="")
libraries = json.loads(sys.argv[2])
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in libraries
    or (m.startswith("sparked_credits.") and not m.startswith(("sparked_credits._core",
        "sparked_credits.errors", "sparked_credits.models", "sparked_credits.control_models",
        "sparked_credits.reports",
        "sparked_credits.pricing", "sparked_credits._version", "sparked_credits.clerk")))
)
print(json.dumps({"events": events, "loaded": loaded}))
"""


def test_importing_and_using_the_core_does_no_io() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            json.dumps(_core_modules()),
            json.dumps(list(IO_LIBRARIES)),
            str(PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["events"] == []
    assert found["loaded"] == []  # no backend, client, edge or I/O library came along
