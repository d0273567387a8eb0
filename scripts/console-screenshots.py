"""The console's screenshots in docs/: a throwaway SQLite ledger (September sent, October
drafted, five synthetic orgs), `billing serve` on loopback, Debian's Chromium signed in as an
admin, and full-page PNGs 1280 px wide of Periods, October's Review and one invoice.

    .venv/bin/python scripts/console-screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ("console-periods.png", "console-review.png", "console-invoice.png")


def take(out: Path) -> list[Path]:
    """Seed, serve, sign in and save the three pages; the paths written."""
    sys.path.insert(0, str(ROOT))  # the tests' support code: the seeded ledger, the server
    from pydantic import SecretStr

    from billing.config import Settings
    from billing.finance.access import add_user
    from billing.states import Role
    from tests.support.api_data import OCTOBER, seed_ledger
    from tests.support.api_server import served_api
    from tests.support.browser import launched_browser, new_tab, sign_in

    out.mkdir(parents=True, exist_ok=True)
    written = [out / name for name in SHOTS]
    with tempfile.TemporaryDirectory(prefix="console-shots-") as scratch:
        folder = Path(scratch)
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{folder / 'billing.db'}",
            output_dir=folder / "statements",
            email_backend="file",
            broker_url=None,
            mka1_api_key=SecretStr("screenshots"),
        )
        seed_ledger(settings)
        password = secrets.token_urlsafe(12)
        add_user(settings, "finance", Role.ADMIN, password, actor="screenshots")
        with (
            served_api(settings, folder) as server,
            launched_browser() as browser,
            new_tab(browser, server.url.removesuffix("/api/v1")) as tab,
        ):
            page = tab.page
            sign_in(page, "finance", password)
            page.wait_for_selector("table#periods")
            page.screenshot(path=str(written[0]), full_page=True)
            page.goto(f"/periods/{OCTOBER}/review")
            page.wait_for_selector("table#review")
            page.screenshot(path=str(written[1]), full_page=True)
            page.locator("table#review tbody tr[data-invoice] td.ref a").first.click()
            page.wait_for_selector("span#invoice-status")
            page.wait_for_timeout(1000)  # the statement's PDF in its frame
            page.screenshot(path=str(written[2]), full_page=True)
            if tab.dialogs:
                raise RuntimeError(f"a page opened a dialog: {tab.dialogs}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of the PNGs")
    for path in take(parser.parse_args().out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
