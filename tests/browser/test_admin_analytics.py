"""The analytics page (/admin) in headless Chromium against the distributed service with sign-in
required: signed out it asks for sign-in, a user without the admin role is told so, an admin sees
the charts (uPlot canvases) and the figures the API gives."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.browser.conftest import Page
from tests.support.accounts import login, user_client
from tests.support.procs import run_livecode

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def admin_page(browser: Any, auth_apis: Any) -> Iterator[Page]:
    page = Page(browser, auth_apis.base)
    yield page
    browser.execute_script("try { localStorage.clear() } catch (e) {}")


def create_admin(env: dict[str, str]) -> tuple[str, str]:
    name, password = f"ops{uuid.uuid4().hex[:8]}", "admin-password-73"
    out = run_livecode("user", "create", name, "--admin", env={**env, "LIVECODE_PASSWORD": password}, timeout=60)
    assert out.returncode == 0, out.stderr
    return name, password


def sign_in(page: Page, username: str, password: str) -> None:
    page.wait(lambda: page.el("#sign-in").is_displayed(), what="the sign-in form")
    page.el("#sign-in-user").clear()
    page.el("#sign-in-user").send_keys(username)
    page.el("#sign-in-password").clear()
    page.el("#sign-in-password").send_keys(password)
    page.el("#sign-in-submit").click()
    page.wait(
        lambda: (
            username in page.text("#account-name")
            and page.driver.execute_script("return document.body.dataset.loaded") in ("true", "error")
        ),
        what="the page to load signed in",
    )


def loaded(page: Page) -> str:
    return str(page.driver.execute_script("return document.body.dataset.loaded"))


def test_admin_signs_in_and_sees_the_charts(admin_page: Page, auth_apis: Any) -> None:
    user = user_client(auth_apis.base)
    for source in ("print('one')", "raise SystemExit(3)"):
        assert user.run(source)["status"] in ("COMPLETED", "FAILED")
    c_source = f'#include <stdio.h>\nint main(void) {{ puts("{uuid.uuid4().hex}"); return 0; }}\n'
    for _ in range(2):  # compiled, then from the compile cache
        assert user.run(c_source, "c", timeout=120)["status"] == "COMPLETED"

    page = admin_page.open("/admin")
    page.wait(lambda: page.el("#sign-in").is_displayed() and loaded(page) == "error", what="the sign-in form")
    assert "admin" in page.text("#message-text")

    # Signed in without the admin role: told so, no figures.
    sign_in(page, user.username, "correct-horse-42")  # type: ignore[attr-defined]
    assert loaded(page) == "error"
    assert "admin role" in page.text("#message-text")
    assert not page.el("#report").is_displayed()
    page.el("#sign-out").click()

    name, password = create_admin(auth_apis.env)
    sign_in(page, name, password)
    assert loaded(page) == "true", page.text("#message-text")
    for chart in ("#chart-runs", "#chart-active", "#chart-outcomes", "#chart-cache", "#chart-wait", "#chart-runtime"):
        assert page.els(f"{chart} .uplot canvas"), f"no chart drawn in {chart}"
    assert int(page.el("#chart-runs").get_attribute("data-series")) >= 1
    assert int(page.el("#chart-wait").get_attribute("data-series")) == 2  # p95 and p50

    # The page shows what the API says for the same range (the last 7 days by day).
    token = login(auth_apis.base, name, password)["access_token"]
    report = requests.get(
        auth_apis.base + "/api/v1/admin/analytics", timeout=30, headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert report["total_runs"] >= 2
    assert page.text("#total-runs") == f"{report['total_runs']:,}"
    assert page.text("#active-users") == f"{report['active']['users']:,}"
    assert report["compile_cache"]["hits"] >= 1 and page.text("#cache-rate").endswith("%")
    # The top users as the API ranks them (the shared stack has other tests' users too: this one
    # need not be among the first).
    rows = [row.text.split("\n")[0] for row in page.els("#top-runs tbody tr")]
    top = report["top_users"]["by_runs"]
    assert len(rows) == len(top) >= 1, rows
    for row, entry in zip(rows, top, strict=True):
        assert row.split()[-2] == f"{entry['runs']:,}", (row, entry)
        assert row.startswith(entry["username"] or "(no account)"), (row, entry)
    assert any(entry["username"] == user.username for entry in top) or len(top) == 10  # type: ignore[attr-defined]
    assert "python" in page.text("#chart-runs") and "c" in page.text("#chart-runs")  # the legend

    shot = os.environ.get("LIVECODE_ADMIN_SCREENSHOT")
    if shot:
        page.driver.set_window_size(1280, 1900)
        page.driver.save_screenshot(shot)
