"""The API docs (/docs, Swagger UI) still work in a real browser under their Content-Security-
Policy: the page's own scripts and styles load and its start-up script runs, while an inline
script that is not the page's own is blocked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Page

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_swagger_ui_works_under_its_csp(browser: Any, embedded: Any) -> None:
    page = Page(browser, embedded.base)
    browser.get(embedded.base + "/docs")
    # Rendered by swagger-ui-bundle.js (from /swaggerui/) after the inline start-up script ran.
    page.wait(lambda: "LiveCode Execution API" in (page.text(".swagger-ui .info .title") or ""),
              what="Swagger UI to render the spec")
    page.wait(lambda: len(page.els(".opblock-tag")) >= 5, what="the namespaces to be listed")
    page.els(".opblock-tag")[0].click()
    page.wait(lambda: page.els(".opblock"), what="a namespace's operations to be listed")
    assert browser.execute_script("return typeof window.ui === 'object'")
    # The stylesheet applied (Swagger UI's CSS hides the example SVG sprite).
    assert browser.execute_script(
        "return getComputedStyle(document.querySelector('.swagger-ui .info .title')).fontFamily") != ""
    # An operation opens and shows its parameters (the UI's own scripts run).
    page.els(".opblock-summary")[0].click()
    page.wait(lambda: page.els(".opblock-body"), what="an operation to open")
    # A script injected into the page is not allowed by the policy.
    browser.execute_script(
        "window.__injected = false; const s = document.createElement('script');"
        "s.textContent = 'window.__injected = true'; document.body.appendChild(s);")
    assert browser.execute_script("return window.__injected") is False
