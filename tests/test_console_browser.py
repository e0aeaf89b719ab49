"""The operator console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): an approver refuses a wrong TOTP and approves with a valid one, an operator's config
change waits for a second approver, a viewer sees no action button. Screenshots of every step go
to ``tests/artifacts/console/``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fbe_pipeline.ops import models as m
from tests.console_util import PASSWORD, Desk, desk

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (apt-get install chromium)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (``--no-sandbox``: CI runs as root)."""
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def d(fbe_home: Path, sample_data: Path) -> Iterator[Desk]:
    """Users of every role, one order pending approval and the console, on a fresh home."""
    with desk(fbe_home, sample_data) as running:
        yield running


@pytest.fixture
def shots() -> Iterator[list[Path]]:
    """The screenshots a test takes; each must exist and be a PNG when the test ends."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    taken: list[Path] = []
    yield taken
    for path in taken:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def _page(browser: Browser, d: Desk, user: str, shots: list[Path], prefix: str) -> Page:
    """A new browser context signed in as ``user`` through the login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{d.url}/live")
    assert page.url.startswith(f"{d.url}/login")
    page.fill("input[name=name]", user)
    page.fill("input[name=password]", PASSWORD)
    _shot(page, shots, f"{prefix}-01-login")
    page.click("#login button[type=submit]")
    page.wait_for_url(f"{d.url}/live")
    return page


def _shot(page: Page, shots: list[Path], name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shots.append(path)


def test_approver_refuses_a_wrong_totp_then_approves(
    browser: Browser, d: Desk, shots: list[Path]
) -> None:
    page = _page(browser, d, "ann", shots, "approver")
    row = page.locator(f'tr[data-order="{d.order_id}"]')
    assert row.count() == 1
    _shot(page, shots, "approver-02-pending")

    row.locator("input[name=totp]").fill("000000")
    row.locator("button[value=approve]").click()
    page.wait_for_selector("#error")
    assert "wrong TOTP code" in page.inner_text("#error")
    assert d.order_state() == m.PENDING_APPROVAL
    _shot(page, shots, "approver-03-wrong-totp")

    row = page.locator(f'tr[data-order="{d.order_id}"]')
    row.locator("input[name=totp]").fill(d.totp("ann"))
    row.locator("button[value=approve]").click()
    page.wait_for_selector("#flash")
    assert page.inner_text("#flash") == f"{d.order_id}: approved"
    assert page.locator(f'tr[data-order="{d.order_id}"]').count() == 0
    assert d.order_state() == m.APPROVED
    _shot(page, shots, "approver-04-approved")
    page.context.close()


def test_operator_config_change_waits_for_a_second_approver(
    browser: Browser, d: Desk, shots: list[Path]
) -> None:
    page = _page(browser, d, "otto", shots, "operator")
    page.click("header a[href='/config']")
    page.fill("#propose input[name=key]", "trigger_score")
    page.fill("#propose input[name=value]", "55")
    page.fill("#propose input[name=reason]", "fewer, stronger signals")
    _shot(page, shots, "operator-02-proposal")
    page.click("#propose button[type=submit]")
    page.wait_for_selector("#flash")
    assert "version 2 waits for a second approver" in page.inner_text("#flash")
    assert page.locator('#held tr[data-version="2"]').count() == 1
    assert page.inner_text("#active-version") == "1"
    assert page.locator("form[action='/config/approve']").count() == 0
    assert d.config_state(2) == m.CONFIG_PENDING
    _shot(page, shots, "operator-03-held")
    page.context.close()


def test_viewer_sees_no_action_button(browser: Browser, d: Desk, shots: list[Path]) -> None:
    page = _page(browser, d, "vic", shots, "viewer")
    for name in ("live", "automations", "config", "health", "security"):
        page.goto(f"{d.url}/{name}")
        assert page.url == f"{d.url}/{name}"
        # The one form that posts is "Sign out".
        posting = page.locator("form[method=post]")
        assert posting.count() == 1
        assert posting.first.get_attribute("action") == "/logout"
        assert page.locator("input[name=totp]").count() == 0
        _shot(page, shots, f"viewer-{name}")
    assert d.order_state() == m.PENDING_APPROVAL
    page.context.close()
