"""Screenshots of the credits page for the README (docs/credits-page.png, docs/credits-dialog.png).

Serves the example app on memory:// with the dev sign-in, on a free loopback port, drives
Debian's Chromium through Playwright (``apt-get install chromium``; ``--chromium PATH`` for
another binary), spends some credits and saves the page and the insufficient-credits dialog::

    python examples/scripts/screenshot_page.py [--out docs]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Page, sync_playwright

from sparked_credits.backends.memory import reset_memory_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import credits_app  # examples/

EXAMPLES = Path(credits_app.__file__).resolve().parent

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free loopback port; stop it on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the example app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def spend(page: Page, button: str, expect_balance: int) -> None:
    page.click(button)
    page.wait_for_selector(f'#balance[data-balance="{expect_balance}"]')
    page.wait_for_function("() => !document.querySelector('#chat-send').disabled")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES.parent / "docs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = credits_app.Settings(
        storage_url="memory://screenshots", dev_signin=True, rate_limit=None
    )
    try:
        with serve(credits_app.create_app(settings)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(
                    viewport={"width": 1180, "height": 760}, timezone_id="UTC", locale="en-GB"
                )
                page = context.new_page()
                page.goto(f"{url}/credits")
                page.wait_for_selector('#balance[data-balance="100"]')
                spend(page, "#chat-send", 90)
                spend(page, "#canvas-simple", 40)
                page.fill("#video-seconds", "2")
                spend(page, "#video-generate", 20)
                page.click('input[name="group_by"][value="action"]')
                path = args.out / "credits-page.png"
                page.screenshot(path=str(path), full_page=True)
                print(f"wrote {path}")
                page.fill("#video-seconds", "6")
                page.click("#video-generate")
                page.wait_for_selector("#insufficient-dialog[open]")
                path = args.out / "credits-dialog.png"
                page.screenshot(path=str(path))
                print(f"wrote {path}")
            finally:
                browser.close()
    finally:
        reset_memory_store("screenshots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
