"""The playground's code history panel (issue 15, part 1) in a real headless Chromium against
`livecode serve`: a checkpoint with a label is listed, choosing an older version shows its diff
to the newest, and Restore puts its code back into the editor and the session."""

from __future__ import annotations

import pytest

from tests.browser.conftest import Page
from tests.browser.test_playground import wait_saved
from tests.support.client import ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OLD = "print('old')\n"
NEW = "print('new')\n"


def listed(page: Page) -> list[str]:
    return [
        str(t)
        for t in page.driver.execute_script(
            "return [...document.querySelectorAll('#versions button')].map(b => b.innerText.replace(/\\s+/g, ' '))"
        )
    ]


def test_checkpoint_diff_and_restore(page: Page, client: ApiClient) -> None:
    page.open("/")
    page.replace_code(OLD)
    sid = wait_saved(page, client, OLD)["session_id"]
    page.el("#versions-box summary").click()
    page.el("#checkpoint-label").send_keys("the old one")
    page.el("#checkpoint").click()
    page.wait(lambda: len(listed(page)) == 1, what="the checkpoint in the list")
    assert "checkpoint: the old one" in listed(page)[0]

    page.replace_code(NEW)
    wait_saved(page, client, NEW)
    page.el("#checkpoint").click()
    page.wait(lambda: len(listed(page)) == 2, what="the second checkpoint")

    page.els("#versions button")[1].click()  # v1, the older one
    page.wait(lambda: "-print('old')" in page.text("#version-diff"), what="the diff of v1 to the newest")
    assert "+print('new')" in page.text("#version-diff")

    page.el("#version-restore").click()
    page.wait(lambda: page.code() == OLD, what="the restored code in the editor")
    session = page.wait(
        lambda: (lambda s: s if s["source_code"] == OLD else None)(
            client.request("GET", f"/api/v1/code-sessions/{sid}").json()
        ),
        what="the session to hold the restored code",
    )
    page.wait(lambda: page.text("#save-state") == f"Saved v{session['version']}", what="the editor on the new version")
    reasons = [v["reason"] for v in client.request("GET", f"/api/v1/code-sessions/{sid}/versions").json()["items"]]
    assert reasons == ["restore", "checkpoint", "checkpoint"]
