"""The manager UI tests' browser: Debian's chromium driven by Playwright, and a logged-in page."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support import require_peer


@contextmanager
def chromium(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium (skipped where it is not installed), closed with its Playwright."""
    exe = require_peer("chromium")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path))  # never download a browser
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


def log_in(browser: Any, manager_url: str, username: str, password: str) -> Any:
    """A page of its own context (own cookies), logged in and on the dashboard."""
    page = browser.new_context().new_page()
    page.goto(f"{manager_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{manager_url}/")
    return page
