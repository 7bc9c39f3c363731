"""The playground end to end, in a real headless Chromium against `livecode serve`: a user types,
sees it autosaved, runs it, watches the output arrive while it runs, reloads and finds it all."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest
import requests

from tests.browser.conftest import Page
from tests.conftest import base_env
from tests.support.client import TERMINAL, ApiClient
from tests.support.procs import start_embedded

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Prints a line every 0.7 s for about 3.5 s: the first line must show while it still runs.
TICKER = (
    "import time\n"
    "for i in range(6):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(0.7)\n"
)
RUN_TIMEOUT = 90  # a cold, busy CI machine; the program itself takes about 4 s


def streaming_available(base: str) -> bool:
    """True when the server has the SSE endpoint (an unknown execution is then EXECUTION_NOT_FOUND,
    not the route-level NOT_FOUND)."""
    r = requests.get(f"{base}/api/v1/executions/{uuid.uuid4()}/events", timeout=10)
    return not (r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND")


def wait_saved(page: Page, client: ApiClient, source: str) -> dict:
    """Wait for "Saved vN" and for the API to hold exactly `source`; returns the session."""
    page.wait(lambda: page.text("#save-state").startswith("Saved v") and page.session_id(), what="autosave")
    sid = page.session_id()
    session = page.wait(lambda: (lambda s: s if s["source_code"] == source else None)(
        client.request("GET", f"/api/v1/code-sessions/{sid}").json()), what="the API to show the saved source")
    assert page.text("#save-state") == f"Saved v{session['version']}"
    return session


def wait_finished(page: Page) -> str:
    return page.wait(lambda: page.run_status() if page.run_status() in TERMINAL
                     and page.run_button().is_enabled() else None, RUN_TIMEOUT, what="the run to finish")


def test_page_is_served_with_the_bundle_and_api_routes_untouched(embedded) -> None:
    base = embedded.base
    r = requests.get(base + "/", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    assert '<script type="module" src="/static/app.js">' in r.text
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert requests.get(base + "/static/app.js", timeout=10).status_code == 200
    assert requests.get(f"{base}/s/{uuid.uuid4()}", timeout=10).status_code == 200
    missing = requests.get(base + "/static/no-such-file.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    # The playground's routes must not shadow the API's.
    assert requests.get(base + "/swagger.json", timeout=10).json()["info"]["title"]
    assert requests.get(base + "/docs", timeout=10).status_code == 200
    assert requests.get(base + "/api/v1/languages", timeout=10).status_code == 200
    assert requests.get(base + "/health", timeout=10).status_code in (200, 503)


def test_language_picker_is_filled_from_the_api(page: Page, client: ApiClient) -> None:
    languages = client.request("GET", "/api/v1/languages").json()
    page.open("/")
    options = page.driver.execute_script(
        "return [...document.querySelectorAll('#language option')].map(o => [o.value, o.disabled])")
    assert options == [[lang["id"], not lang["available"]] for lang in languages]
    assert page.el("#language").get_attribute("value") == "python"
    assert 'print("Hello, World!")' in page.code()
    assert page.text("#save-state") == "Not saved yet"


def test_type_autosave_run_reload(page: Page, client: ApiClient) -> None:
    page.open("/")
    page.replace_code(TICKER)
    session = wait_saved(page, client, TICKER)
    sid = session["session_id"]
    assert session["language"] == "python"

    # Real key presses: a comment appended is saved as a new version.
    page.type_at_end("# done")
    edited = TICKER + "# done"
    saved = wait_saved(page, client, edited)
    assert saved["version"] > session["version"]

    page.run_button().click()
    assert wait_finished(page) == "COMPLETED"
    assert page.output() == "".join(f"tick {i}\n" for i in range(6))
    assert page.text("#exit-code") == "0"
    for field in ("#time-ms", "#cpu-ms"):
        assert page.text(field).endswith(" ms"), field
    assert page.text("#memory-kb") != "–"
    runs = client.request("GET", f"/api/v1/executions/session/{sid}").json()
    assert runs["total"] == 1 and runs["items"][0]["status"] == "COMPLETED"
    page.wait(lambda: len(page.els("#history button")) == 1, what="the run in the history")

    # The URL names the session: reloading it brings back the code, the history and the last output.
    page.reload()
    assert page.session_id() == sid
    assert page.code() == edited
    assert page.text("#save-state") == f"Saved v{saved['version']}"
    page.wait(lambda: len(page.els("#history button")) == 1, what="the history after reload")
    assert "COMPLETED" in page.text("#history")
    assert page.output() == "".join(f"tick {i}\n" for i in range(6))

    # Picking a run from the history shows its output.
    page.driver.execute_script("document.getElementById('output').textContent = ''")
    page.els("#history button")[0].click()
    page.wait(lambda: page.output().startswith("tick 0"), what="the chosen run's output")

    if os.environ.get("LIVECODE_PLAYGROUND_SCREENSHOT"):
        page.driver.save_screenshot(os.environ["LIVECODE_PLAYGROUND_SCREENSHOT"])


def test_output_streams_before_the_run_ends(page: Page, client: ApiClient, embedded) -> None:
    if not streaming_available(embedded.base):
        pytest.skip("this server has no /api/v1/executions/{id}/events endpoint yet")
    page.open("/")
    page.replace_code(TICKER)
    sid = wait_saved(page, client, TICKER)["session_id"]
    page.run_button().click()
    page.wait(lambda: "tick 0" in page.output(), RUN_TIMEOUT, what="the first line")
    # Seen while the program still runs: the button is still disabled and the last line not out.
    observed = {"button_enabled": page.run_button().is_enabled(), "status": page.run_status(),
                "output": page.output()}
    execution = client.request("GET", f"/api/v1/executions/session/{sid}").json()["items"][0]
    assert observed["button_enabled"] is False, observed
    assert observed["status"] == "RUNNING", observed
    assert "tick 5" not in observed["output"], observed
    assert page.el("#output").get_attribute("data-transport") == "sse"
    assert wait_finished(page) == "COMPLETED"
    final = client.wait_execution(execution["execution_id"])
    assert page.output() == final["stdout"]


def test_stop_ends_a_run_that_would_never_end(page: Page, client: ApiClient) -> None:
    source = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.01)\n"
    page.open("/")
    page.replace_code(source)
    sid = wait_saved(page, client, source)["session_id"]
    assert not page.el("#stop").is_displayed()  # only while a run is active
    page.run_button().click()
    page.wait(lambda: "looping" in page.output(), RUN_TIMEOUT, what="the program to start")
    page.el("#stop").click()
    assert wait_finished(page) == "CANCELLED"
    assert page.text("#run-status").startswith("Stopped")
    assert not page.el("#stop").is_displayed()
    execution = client.request("GET", f"/api/v1/executions/session/{sid}").json()["items"][0]
    assert (execution["status"], execution["signal"]) == ("CANCELLED", 9), execution


def test_double_click_on_run_starts_one_execution(page: Page, client: ApiClient) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    source = "import sys\nprint('got', sys.stdin.read().strip())\n"
    page.open("/")
    page.replace_code(source)
    sid = wait_saved(page, client, source)["session_id"]
    page.el("#stdin-box summary").click()
    page.el("#stdin").send_keys("forty-two")
    ActionChains(page.driver).double_click(page.run_button()).perform()
    assert wait_finished(page) == "COMPLETED"
    assert page.output() == "got forty-two\n"
    runs = client.request("GET", f"/api/v1/executions/session/{sid}").json()
    assert runs["total"] == 1, runs
    # The page itself sent one execute request (the server's one-run-per-session 409 is a second
    # line of defence, not what keeps a double click to one run).
    posts = page.driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/execute')).length")
    assert posts == 1


def test_version_conflict_is_shown_and_the_server_version_can_be_loaded(page: Page, client: ApiClient) -> None:
    session = client.create_session("print('mine')\n")
    sid = session["session_id"]
    page.open(f"/?session={sid}")
    assert page.code() == "print('mine')\n"
    page.wait(lambda: page.text("#save-state") == "Saved v1", what="the loaded session")
    # Someone else saves in between (another tab, another person).
    r = client.request("PATCH", f"/api/v1/code-sessions/{sid}", json={"source_code": "print('theirs')\n", "version": 1})
    assert r.status_code == 200 and r.json()["version"] == 2

    page.type_at_end("# my edit")
    page.wait(lambda: page.text("#save-state") == "Not saved: version conflict", what="the conflict state")
    assert "version 2" in page.text("#message-text")
    assert client.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == "print('theirs')\n"

    page.el("#conflict-reload").click()
    page.wait(lambda: page.code() == "print('theirs')\n" and page.text("#save-state") == "Saved v2",
              what="the server's version in the editor")
    assert not page.el("#message").is_displayed()


def test_unknown_session_url_says_so(page: Page) -> None:
    page.open(f"/s/{uuid.uuid4()}")
    assert "does not exist" in page.text("#message-text")
    assert page.session_id() is None
    assert page.text("#save-state") == "Not saved yet"



def test_interactive_input_goes_over_the_websocket(page: Page, client: ApiClient, embedded) -> None:
    if not streaming_available(embedded.base):
        pytest.skip("this server has no streaming endpoints yet")
    source = "name = input('name? ')\nprint(f'hello {name}')\n"
    page.open("/")
    page.replace_code(source)
    sid = wait_saved(page, client, source)["session_id"]
    page.el("#interactive").click()
    page.run_button().click()
    page.wait(lambda: page.el("#live-input").is_displayed(), RUN_TIMEOUT, what="the input line")
    page.wait(lambda: "name? " in page.output(), RUN_TIMEOUT, what="the program's prompt")
    assert page.el("#output").get_attribute("data-transport") == "websocket"
    page.el("#live-line").send_keys("Ada\n")
    assert wait_finished(page) == "COMPLETED"
    assert "hello Ada" in page.output()
    run = client.request("GET", f"/api/v1/executions/session/{sid}").json()["items"][0]
    assert run["stdout"] == "name? hello Ada\n"


def test_changing_language_of_a_saved_session_starts_a_new_one(page: Page, client: ApiClient) -> None:
    session = client.create_session("print('keep me')\n")
    page.open(f"/?session={session['session_id']}")
    page.wait(lambda: page.text("#save-state") == "Saved v1", what="the loaded session")
    page.driver.execute_script(
        "const s = document.getElementById('language'); s.value = 'bash'; s.dispatchEvent(new Event('change'))")
    page.wait(lambda: page.session_id() not in (None, session["session_id"]), what="a new session")
    new = client.request("GET", f"/api/v1/code-sessions/{page.session_id()}").json()
    assert new["language"] == "bash" and new["source_code"] == "print('keep me')\n"
    old = client.request("GET", f"/api/v1/code-sessions/{session['session_id']}").json()
    assert old["language"] == "python" and old["version"] == 1
    page.driver.back()
    page.wait(lambda: page.session_id() == session["session_id"]
              and page.driver.execute_script("return document.body.dataset.ready") == "true"
              and page.el("#language").get_attribute("value") == "python", what="the old session again")


def test_sign_in_required_is_explained_and_a_token_works(browser) -> None:
    """On a server that requires accounts, the page says how to sign in, and a pasted token is
    sent on every call (the embedded default has no sign-in, hence a server of its own here)."""
    data_dir = tempfile.mkdtemp(prefix="lc-embedded-auth-")
    env = base_env(LIVECODE_DATA_DIR=data_dir, LIVECODE_AUTH_REQUIRED="true")
    proc, base = start_embedded(env)
    try:
        page = Page(browser, base).open("/")
        page.run_button().click()
        page.wait(lambda: "requires sign-in" in page.text("#message-text"), what="the sign-in message")
        assert page.text("#save-state") == "Not saved"
        assert page.run_button().is_enabled()

        creds = {"username": "ada", "password": "correct horse battery staple"}
        assert requests.post(base + "/api/v1/auth/register", json=creds, timeout=30).status_code == 201
        token = requests.post(base + "/api/v1/auth/login", json=creds, timeout=30).json()["access_token"]
        page.el(".settings summary").click()
        page.el("#token").send_keys(token + "\n")  # "change" reloads the page with the token
        page.wait(lambda: page.driver.execute_script("return localStorage.getItem('livecode.token')") == token,
                  what="the token to be stored")
        page.open("/")
        page.replace_code("print('signed in')\n")
        page.run_button().click()
        assert wait_finished(page) == "COMPLETED"
        assert page.output() == "signed in\n"
        owner = ApiClient(base, headers={"Authorization": f"Bearer {token}"})
        assert owner.request("GET", f"/api/v1/code-sessions/{page.session_id()}").status_code == 200
    finally:
        browser.execute_script("localStorage.removeItem('livecode.token')")
        proc.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_without_an_event_stream_the_page_falls_back_to_polling(page: Page, client: ApiClient) -> None:
    """A server without the SSE endpoint (404) still gets runs shown: the page polls the execution."""
    script = page.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const realFetch = window.fetch;
        window.fetch = (input, init) => String(input).endsWith('/events')
          ? Promise.resolve(new Response('{"error":{"code":"NOT_FOUND","message":"no such resource"}}',
              {status: 404, headers: {'Content-Type': 'application/json'}}))
          : realFetch(input, init);
    """})
    try:
        source = "print('polled')\n"
        page.open("/")
        page.replace_code(source)
        sid = wait_saved(page, client, source)["session_id"]
        page.run_button().click()
        assert wait_finished(page) == "COMPLETED"
        assert page.el("#output").get_attribute("data-transport") == "polling"
        assert page.output() == "polled\n"
        assert page.text("#exit-code") == "0"
        assert client.request("GET", f"/api/v1/executions/session/{sid}").json()["total"] == 1
    finally:
        page.driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
