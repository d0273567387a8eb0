"""Debian's Chromium driven by Playwright (never a downloaded browser): launched headless with
flags that keep it off the network, a fresh context per page, and the console's sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Dialog, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
MISSING = (
    f"no Chromium at {CHROMIUM}: `make test-system-deps` installs it (Debian's chromium; "
    "the browser tests never download one)"
)
# Headless on a closed network: no sandbox (containers), no GPU, and none of the background
# fetches (component updates, sync, QUIC probes) that would only retry against a dead network.
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WIDTH = 1280
TIMEOUT_MS = 20_000


class BrowserMissing(RuntimeError):
    """Chromium is not installed where the tests expect it."""


@contextmanager
def launched_browser() -> Iterator[Browser]:
    """Chromium for the length of a `with` block; BrowserMissing (one line) when not installed."""
    if not CHROMIUM.is_file():
        raise BrowserMissing(MISSING)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(FLAGS)
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page in its own browser context (own cookies), and every dialog it tried to open."""

    page: Page
    dialogs: list[str] = field(default_factory=list)

    def record(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@contextmanager
def new_tab(browser: Browser, base_url: str) -> Iterator[Tab]:
    """A fresh context (no cookies) at `base_url`, 1280 px wide; any dialog is recorded and
    dismissed (the console opens none)."""
    context = browser.new_context(base_url=base_url, viewport={"width": WIDTH, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        tab = Tab(context.new_page())
        tab.page.on("dialog", tab.record)
        yield tab
    finally:
        context.close()


def sign_in(page: Page, name: str, password: str) -> None:
    """Sign in through the login page as a person would: type, click, land on a page."""
    page.goto("/login")
    page.fill('input[name="name"]', name)
    page.fill('input[name="password"]', password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def confirm(page: Page) -> None:
    """On a confirmation page: press its confirm button and wait for where it leads."""
    page.locator("button#confirm").click()
    page.wait_for_load_state()
