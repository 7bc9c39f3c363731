"""The playground against the distributed service with sign-in required (PostgreSQL, Redis, a real
worker): signing in and out in the page, an expired access token renewed without the user noticing,
an ended sign-in told apart from none, and a shared link opened while signed out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests

from tests.browser.conftest import Page
from tests.browser.test_playground import wait_finished
from tests.support.accounts import register
from tests.support.client import ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def auth_page(browser: Any, auth_apis: Any) -> Iterator[Page]:
    page = Page(browser, auth_apis.base)
    yield page
    browser.execute_script("try { localStorage.clear() } catch (e) {}")


def storage(page: Page, key: str) -> str | None:
    return page.driver.execute_script("return localStorage.getItem(arguments[0])", key)  # type: ignore[no-any-return]


def sign_in(page: Page, username: str, password: str) -> None:
    page.wait(lambda: page.el("#sign-in").is_displayed(), what="the sign-in form")
    page.el("#sign-in-user").send_keys(username)
    page.el("#sign-in-password").send_keys(password)
    page.el("#sign-in-submit").click()
    # The page reloads signed in: wait for the new page to be ready, not just for the old one.
    page.wait(lambda: page.el("#account").is_displayed() and username in page.text("#account-name")
              and page.driver.execute_script("return document.body.dataset.ready") == "true",
              what="the page to show who is signed in")


def expired_copy(token: str, secret: str) -> str:
    """The same access token, already expired: what a tab left open past its 15 minutes holds."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 60
    return jwt.encode(claims, secret, algorithm="HS256")


def test_sign_in_run_expiry_renewal_and_sign_out(auth_page: Page, auth_apis: Any) -> None:
    page = auth_page.open("/")
    # Signed out, the page offers to sign in before anything fails.
    page.wait(lambda: page.el("#sign-in").is_displayed(), what="the sign-in form")
    name, password = register(auth_apis.base)

    page.el("#sign-in-user").send_keys(name)
    page.el("#sign-in-password").send_keys("wrong-password-0")
    page.el("#sign-in-submit").click()
    page.wait(lambda: "Wrong username or password" in page.text("#sign-in-error"), what="the wrong-password note")
    page.el("#sign-in-password").clear()
    page.el("#sign-in-user").clear()
    sign_in(page, name, password)
    assert not page.el("#sign-in").is_displayed()

    page.replace_code("print('signed in')\n")
    page.run_button().click()
    assert wait_finished(page) == "COMPLETED"
    assert page.output() == "signed in\n"
    sid = page.session_id()
    assert sid

    # The access token expires while the tab is open: the next save and run renew it silently.
    old_refresh = storage(page, "livecode.refresh")
    stale = expired_copy(str(storage(page, "livecode.token")), auth_apis.env["SECRET_KEY"])
    page.driver.execute_script("localStorage.setItem('livecode.token', arguments[0])", stale)
    page.reload()
    page.wait(lambda: "signed in" in page.output(), what="the session to load with a renewed token")
    page.replace_code("print('renewed')\n")
    page.run_button().click()
    assert wait_finished(page) == "COMPLETED"
    assert page.output() == "renewed\n"
    fresh = storage(page, "livecode.token")
    assert fresh and fresh != stale
    assert storage(page, "livecode.refresh") not in (None, "", old_refresh)  # rotated
    assert ApiClient(auth_apis.base, headers={"Authorization": f"Bearer {fresh}"}).request(
        "GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "print('renewed')\n"

    # Signing out ends the sign-in on the server too: the refresh token no longer works.
    last_refresh = storage(page, "livecode.refresh")
    page.el("#sign-out").click()
    page.wait(lambda: page.driver.execute_script("return document.body.dataset.ready") == "true"
              and page.el("#sign-in").is_displayed(), what="the signed-out page")
    assert storage(page, "livecode.token") is None and storage(page, "livecode.refresh") is None
    r = requests.post(auth_apis.base + "/api/v1/auth/refresh", json={"refresh_token": last_refresh}, timeout=30)
    assert r.status_code == 401


def test_shared_link_while_signed_out_and_an_ended_sign_in(auth_page: Page, auth_apis: Any) -> None:
    name, password = register(auth_apis.base)
    tokens = requests.post(auth_apis.base + "/api/v1/auth/login", json={"username": name, "password": password},
                           timeout=30).json()
    owner = ApiClient(auth_apis.base, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    session = owner.request("POST", "/api/v1/code-sessions",
                            json={"language": "python", "source_code": "print('shared code')\n"}).json()
    link = f"/?session={session['session_id']}"

    # Signed out: the page says the link needs sign-in, and shows no Hello World in its place.
    page = auth_page.open(link)
    page.wait(lambda: "needs sign-in" in page.text("#message-text"), what="the shared-link message")
    assert "Hello" not in page.code()
    assert page.session_id() == session["session_id"]  # the link is kept
    sign_in(page, name, password)
    page.wait(lambda: page.code() == "print('shared code')\n", what="the shared session after signing in")

    # The sign-in ended elsewhere (logged out on another device with the same refresh token):
    # the page says it expired, not that sign-in is required.
    refresh = storage(page, "livecode.refresh")
    assert requests.post(auth_apis.base + "/api/v1/auth/logout", json={"refresh_token": refresh},
                         timeout=30).status_code == 204
    stale = expired_copy(str(storage(page, "livecode.token")), auth_apis.env["SECRET_KEY"])
    page.driver.execute_script("localStorage.setItem('livecode.token', arguments[0])", stale)
    page.reload()
    page.wait(lambda: "expired" in page.text("#message-text"), what="the expired-sign-in message")
    assert "requires sign-in" not in page.text("#message-text")
    assert page.el("#sign-in").is_displayed()
