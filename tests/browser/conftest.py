"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium, for the
playground's end-to-end tests. One browser for the whole module run; each test opens its own page."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from livecode.sandbox.hostfs import set_child_subreaper
from tests.support.client import ApiClient
from tests.support.procs import reap_adopted

if TYPE_CHECKING:
    from tests.conftest import Cluster

CHROMIUM = os.environ.get("LIVECODE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("LIVECODE_TEST_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--disable-default-apps", "--disable-sync", "--window-size=1280,800",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"chromium not installed ({CHROMIUM}): apt-get install -y chromium chromium-driver"
    if not Path(CHROMEDRIVER).exists():
        return f"chromedriver not installed ({CHROMEDRIVER}): apt-get install -y chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed: pip install -e '.[dev]'"
    return None


class Page:
    """The playground in the browser, with waits that poll the DOM until a deadline."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self, path: str = "/") -> Page:
        self.driver.get(self.base + path)
        self.wait(lambda: self.driver.execute_script("return document.body.dataset.ready") == "true",
                  what="the playground to start")
        return self

    def reload(self) -> Page:
        self.driver.refresh()
        self.wait(lambda: self.driver.execute_script("return document.body.dataset.ready") == "true",
                  what="the playground to start again")
        return self

    def wait(self, check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # A page that reloads between finding an element and reading it: look again next poll.
        ignored = (NoSuchElementException, StaleElementReferenceException)
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05, ignored_exceptions=ignored).until(
                lambda _d: check())
        except Exception as exc:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; page state: {self.state()}") from exc

    def el(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.driver.execute_script("const e = document.querySelector(arguments[0]); "
                                              "return e ? e.textContent : null", css))

    def code(self) -> str:
        return str(self.driver.execute_script(
            "return [...document.querySelectorAll('.cm-content .cm-line')].map(l => l.textContent).join('\\n')"))

    def focus_editor(self) -> None:
        self.el(".cm-content").click()

    def replace_code(self, text: str) -> None:
        """Select all and put `text` in, as a paste would (CDP insertText: one input event, so the
        editor's auto-indent and bracket closing leave it as it is)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        self.focus_editor()
        ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()
        self.driver.execute_cdp_cmd("Input.insertText", {"text": text})

    def type_at_end(self, keys: str) -> None:
        """Real key presses at the end of the document."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        self.focus_editor()
        ActionChains(self.driver).key_down(Keys.CONTROL).send_keys(Keys.END).key_up(Keys.CONTROL).send_keys(keys).perform()

    def session_id(self) -> str | None:
        return self.driver.execute_script(
            "const u = new URL(location.href); return u.searchParams.get('session') || "
            "(u.pathname.match(/^\\/s\\/([^/]+)/) || [])[1] || null")

    def run_button(self) -> Any:
        return self.el("#run")

    def run_status(self) -> str:
        return str(self.driver.execute_script("return document.getElementById('run-status').dataset.status"))

    def output(self) -> str:
        return self.text("#output")

    def state(self) -> dict[str, Any]:
        try:
            return {
                "url": self.driver.current_url,
                "save_state": self.text("#save-state"),
                "run_status": self.text("#run-status"),
                "message": self.text("#message-text"),
                "output": self.output()[-500:],
            }
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return {"error": repr(exc)}


@contextlib.contextmanager
def chromium(profile_prefix: str = "lc-chromium-") -> Iterator[Any]:
    """A headless Chromium with a fresh profile (skips the test when none is installed)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    profile = tempfile.mkdtemp(prefix=profile_prefix)
    options.add_argument(f"--user-data-dir={profile}")
    # What the browser leaves behind when it quits (its crash handlers, which daemonize) comes to
    # this process, which reaps it below, instead of to the host's init, where it outlived the run.
    set_child_subreaper()
    # Explicit driver path: Selenium never fetches a driver or browser of its own.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        reap_adopted(("chrom", "chrome_crashpad"))
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def page(browser: Any, embedded: Cluster, request: pytest.FixtureRequest) -> Iterator[Page]:
    p = Page(browser, embedded.base)
    yield p
    # Each test starts from a clean browser: no remembered language or token.
    browser.execute_script("try { localStorage.clear() } catch (e) {}")
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shot = Path(tempfile.gettempdir()) / f"lc-playground-{request.node.name}.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the failed page: {shot}\nserver log tail:\n{embedded.api.output()[-3000:]}")


@pytest.fixture
def client(embedded: Cluster) -> ApiClient:
    return embedded.client()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the item, so the `page` fixture can screenshot failures.
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report
