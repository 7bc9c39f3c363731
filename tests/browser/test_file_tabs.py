"""The playground's file tabs, in a real headless Chromium against `livecode serve`: add a file,
switch, rename, make another the entry, delete; each change is autosaved as the session's files,
the program runs as several files, and a reload brings the tabs back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Page
from tests.browser.test_playground import wait_finished
from tests.support.client import ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def session_of(page: Page, client: ApiClient) -> dict[str, Any]:
    sid = page.wait(page.session_id, what="a session")
    return client.request("GET", f"/api/v1/code-sessions/{sid}").json()  # type: ignore[no-any-return]


def wait_files(page: Page, client: ApiClient, expected: list[dict[str, str]], entry: str) -> dict[str, Any]:
    """Wait for autosave to have stored exactly these files and entry."""
    page.wait(lambda: page.text("#save-state").startswith("Saved v"), what="autosave")
    return page.wait(
        lambda: (lambda s: s if s["files"] == expected and s["entry"] == entry else None)(session_of(page, client)),
        what=f"the API to hold {expected} (entry {entry})",
    )


def tabs(page: Page) -> list[str]:
    return [t.text.removeprefix("▶ ") for t in page.els("#file-tabs .file-tab")]


def name_file(page: Page, button: str, name: str) -> None:
    page.el(button).click()
    box = page.el("#file-name")
    box.clear()
    box.send_keys(name)
    page.el("#file-form button[type=submit]").click()


def test_file_tabs_add_switch_rename_entry_delete_run_and_reload(page: Page, client: ApiClient) -> None:
    page.open("/")
    page.replace_code("from helper import greet\ngreet()\n")
    page.wait(lambda: page.text("#save-state").startswith("Saved v"), what="the first save")
    assert tabs(page) == ["main.py"]

    name_file(page, "#file-add", "helper.py")
    page.wait(lambda: tabs(page) == ["main.py", "helper.py"], what="the new tab")
    assert page.code() == ""
    page.replace_code("def greet():\n    print('hi from helper')\n")
    main = {"path": "main.py", "content": "from helper import greet\ngreet()\n"}
    helper = {"path": "helper.py", "content": "def greet():\n    print('hi from helper')\n"}
    wait_files(page, client, [main, helper], "main.py")

    page.run_button().click()
    assert wait_finished(page) == "COMPLETED"
    assert page.output() == "hi from helper\n"

    # Switching shows each file's own text.
    page.els("#file-tabs .file-tab")[0].click()
    page.wait(lambda: page.code() == main["content"], what="main.py in the editor")

    # A bad name is refused in the page and nothing is saved.
    name_file(page, "#file-add", "../evil.py")
    page.wait(lambda: "relative path" in page.text("#message-text"), what="the refusal")
    assert tabs(page) == ["main.py", "helper.py"]
    page.el("#file-cancel").click()

    # Rename the helper (the import follows in main.py), make a new file the entry, then delete it.
    page.els("#file-tabs .file-tab")[1].click()
    name_file(page, "#file-rename", "lib/greeting.py")
    page.els("#file-tabs .file-tab")[0].click()
    page.replace_code("from lib.greeting import greet\ngreet()\n")
    main = {"path": "main.py", "content": "from lib.greeting import greet\ngreet()\n"}
    helper = {**helper, "path": "lib/greeting.py"}
    wait_files(page, client, [main, helper], "main.py")

    name_file(page, "#file-add", "other.py")
    page.replace_code("print('other runs')\n")
    page.el("#file-entry").click()
    other = {"path": "other.py", "content": "print('other runs')\n"}
    wait_files(page, client, [main, helper, other], "other.py")
    assert page.el("#file-tabs .file-tab[data-entry=true]").get_attribute("data-path") == "other.py"
    page.run_button().click()
    assert wait_finished(page) == "COMPLETED"
    assert page.output() == "other runs\n"

    page.el("#file-delete").click()  # other.py, the entry: main.py runs again
    session = wait_files(page, client, [main, helper], "main.py")

    # A reload brings back the tabs, the entry's text and the saved version.
    page.reload()
    assert tabs(page) == ["main.py", "lib/greeting.py"]
    assert page.code() == main["content"]
    assert page.text("#save-state") == f"Saved v{session['version']}"
    page.run_button().click()
    assert wait_finished(page) == "COMPLETED"
    assert page.output() == "hi from helper\n"
