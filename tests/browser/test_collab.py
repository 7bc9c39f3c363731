"""Live co-editing in the playground: two Chromium windows (two browsers, each its own profile)
type into one session against `livecode serve`; each sees the other's text, cursor and presence,
the source follows, and a run one starts is followed live by the other."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Page, chromium
from tests.support.client import TERMINAL, ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]
RUN_TIMEOUT = 90


@pytest.fixture(scope="module")
def second_browser() -> Iterator[Any]:
    with chromium("lc-chromium-2-") as driver:
        yield driver


def code(page: Page) -> str:
    """The editor's text without the other editors' carets (widgets with their names in them)."""
    return str(
        page.driver.execute_script(
            "return [...document.querySelectorAll('.cm-content .cm-line')].map(l => {"
            " const c = l.cloneNode(true); c.querySelectorAll('.cm-ySelectionCaret').forEach(e => e.remove());"
            " return c.textContent }).join('\\n')"
        )
    )


def live(page: Page, sid: str) -> Page:
    page.open(f"/?session={sid}&live=1")
    page.wait(
        lambda: page.driver.execute_script("return document.body.dataset.live") == "true", what="live editing to start"
    )
    return page


def test_two_windows_type_into_one_session(page: Page, second_browser: Any, client: ApiClient) -> None:
    sid = client.create_session("print('hi')\n")["session_id"]
    alice = live(page, sid)
    bob = live(Page(second_browser, page.base), sid)
    for p in (alice, bob):
        p.wait(lambda p=p: code(p) == "print('hi')\n", what="the session's text")
        p.wait(lambda p=p: len(p.els("#presence .peer")) == 2, what="both in the presence list")

    alice.type_at_end("# from alice")
    bob.wait(lambda: "# from alice" in code(bob), what="alice's text in bob's window")
    bob.type_at_end("\n# from bob")
    alice.wait(lambda: "# from bob" in code(alice), what="bob's text in alice's window")
    # Each sees the other's cursor, drawn by y-codemirror.next.
    for p in (alice, bob):
        p.wait(lambda p=p: len(p.els(".cm-ySelectionCaret")) >= 1, what="the other's cursor")
    assert code(alice) == code(bob) == "print('hi')\n# from alice\n# from bob"

    # The source follows (REST clients and runs see what the editors see).
    expected = code(alice)
    alice.wait(
        lambda: client.request("GET", f"/api/v1/code-sessions/{sid}").json()["source_code"] == expected,
        what="the source to follow the document",
    )
    alice.wait(lambda: alice.text("#save-state").startswith("Live · saved v"), what="the saved state")

    # Bob runs; alice follows the same run live.
    bob.el("#run").click()
    for p in (bob, alice):
        p.wait(lambda p=p: p.run_status() in TERMINAL and "hi" in p.output(), RUN_TIMEOUT, what="the run's output")
    runs = client.request("GET", f"/api/v1/executions/session/{sid}").json()
    assert runs["total"] == 1


def test_two_windows_co_edit_a_multi_file_program(page: Page, second_browser: Any, client: ApiClient) -> None:
    r = client.request(
        "POST",
        "/api/v1/code-sessions",
        json={
            "language": "python",
            "entry": "main.py",
            "files": [{"path": "main.py", "content": "import util\n"}, {"path": "util.py", "content": "X = 1\n"}],
        },
    )
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    alice = live(page, sid)
    bob = live(Page(second_browser, page.base), sid)
    for p in (alice, bob):
        p.wait(lambda p=p: [t.text for t in p.els(".file-tab")] == ["main.py", "util.py"], what="the file tabs")
        assert p.el("#file-add").is_displayed()  # the set of files is the shared document's
        p.el('.file-tab[data-path="util.py"]').click()
        p.wait(lambda p=p: code(p) == "X = 1\n", what="util.py in the editor")
    alice.type_at_end("Y = 2")
    bob.wait(lambda: code(bob) == "X = 1\nY = 2", what="alice's line in bob's util.py")
    bob.el('.file-tab[data-path="main.py"]').click()
    bob.wait(lambda: code(bob) == "import util\n", what="main.py again")

    def files() -> list[tuple[str, str]]:
        got = client.request("GET", f"/api/v1/code-sessions/{sid}").json()
        return [(f["path"], f["content"]) for f in got["files"]]

    alice.wait(
        lambda: files() == [("main.py", "import util\n"), ("util.py", "X = 1\nY = 2")],
        what="the session's files to follow",
    )

    # Live, a file added or renamed in one window is a tab in the other, and in the session.
    def name_file(p: Page, button: str, name: str) -> None:
        p.el(button).click()
        field = p.el("#file-name")
        field.clear()
        field.send_keys(name + "\n")

    name_file(alice, "#file-add", "extra.py")
    bob.wait(lambda: "extra.py" in [t.text for t in bob.els(".file-tab")], what="alice's new file as a tab")
    alice.wait(lambda: alice.el('.file-tab[data-path="extra.py"]').get_attribute("aria-selected") == "true",
               what="the new file shown")
    alice.type_at_end("Z = 3")
    bob.el('.file-tab[data-path="extra.py"]').click()
    bob.wait(lambda: code(bob) == "Z = 3", what="the new file's text")
    name_file(bob, "#file-rename", "lib.py")
    alice.wait(lambda: sorted(t.text for t in alice.els(".file-tab")) == ["lib.py", "main.py", "util.py"],
               what="the rename in alice's window")
    alice.wait(
        lambda: sorted(files()) == [("lib.py", "Z = 3"), ("main.py", "import util\n"), ("util.py", "X = 1\nY = 2")],
        what="the session's files to follow the add and the rename",
    )
    assert client.request("GET", f"/api/v1/code-sessions/{sid}").json()["entry"] == "main.py"


def test_a_share_link_from_the_dialog_brings_a_second_user_in_live(
    browser: Any, second_browser: Any, auth_apis: Any
) -> None:
    from tests.browser.test_playground_auth import sign_in
    from tests.support.accounts import register

    owner_name, owner_pw = register(auth_apis.base)
    guest_name, guest_pw = register(auth_apis.base)
    owner_page, guest_page = Page(browser, auth_apis.base), Page(second_browser, auth_apis.base)
    try:
        owner_page.open("/")
        sign_in(owner_page, owner_name, owner_pw)
        owner_page.replace_code("print('together')\n")
        owner_page.wait(lambda: owner_page.text("#save-state").startswith("Saved v"), what="the new session")
        # The share dialog: an editor link.
        owner_page.el("#collab").click()
        owner_page.wait(lambda: owner_page.el("#share-dialog").is_displayed(), what="the share dialog")
        owner_page.wait(lambda: owner_name in owner_page.text("#members-list"), what="the owner in the list")
        owner_page.el("#link-create").click()
        link = owner_page.wait(lambda: owner_page.el("#link-url").get_attribute("value"), what="the share link")
        assert "#join=lcs_" in link and "live=1" in link
        owner_page.el("#go-live").click()
        owner_page.wait(
            lambda: owner_page.driver.execute_script("return document.body.dataset.live") == "true",
            what="the owner live",
        )

        guest_page.open("/")
        sign_in(guest_page, guest_name, guest_pw)
        guest_page.driver.get(link)
        guest_page.wait(
            lambda: guest_page.driver.execute_script("return document.body.dataset.live") == "true",
            what="the guest live through the link",
        )
        guest_page.wait(lambda: code(guest_page) == "print('together')\n", what="the shared text")
        assert "#join" not in guest_page.driver.current_url  # the token is redeemed once and dropped
        guest_page.type_at_end("# guest was here")
        owner_page.wait(lambda: "# guest was here" in code(owner_page), what="the guest's line at the owner's")
        for p, other in ((owner_page, guest_name), (guest_page, owner_name)):
            p.wait(lambda p=p, other=other: other in p.text("#presence"), what="the other in the presence list")
        # The guest is an editor of the session now (the link's role).
        owner_page.el("#collab").click()
        owner_page.wait(lambda: f"{guest_name} (editor)" in owner_page.text("#members-list"), what="the new member")
    finally:
        for p in (owner_page, guest_page):
            p.driver.execute_script("try { localStorage.clear() } catch (e) {}")
