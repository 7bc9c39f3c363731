"""The playground's tests panel (issue 13, part 1) in a real headless Chromium against `livecode
serve`: add test cases, run them, see a green or red verdict per case and the summary; the cases
stay with the session across a reload."""

from __future__ import annotations

import os

import pytest

from tests.browser.conftest import Page
from tests.browser.test_playground import RUN_TIMEOUT, wait_finished, wait_saved
from tests.support.client import ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
GREEN = "rgb(27, 122, 58)"  # --ok
RED = "rgb(180, 35, 24)"  # --bad


def add_case(page: Page, name: str, stdin: str, expected: str) -> None:
    before = len(page.els(".test-case"))
    page.el("#add-test").click()
    page.wait(lambda: len(page.els(".test-case")) == before + 1, what="a new test case")
    row = page.els(".test-case")[-1]
    row.find_element("css selector", ".test-name").send_keys(name)
    row.find_element("css selector", ".test-stdin").send_keys(stdin)
    row.find_element("css selector", ".test-expected").send_keys(expected)


def verdicts(page: Page) -> list[str]:
    return list(
        page.driver.execute_script(
            "return [...document.querySelectorAll('.test-case .verdict')].map(v => v.dataset.verdict || '')"
        )
    )


def colour(page: Page, index: int) -> str:
    return str(
        page.driver.execute_script(
            "return getComputedStyle(document.querySelectorAll('.test-case .verdict')[arguments[0]]).color", index
        )
    )


def test_add_cases_run_them_and_see_a_verdict_each(page: Page, client: ApiClient) -> None:
    page.open("/")
    page.replace_code(SUM)
    sid = wait_saved(page, client, SUM)["session_id"]
    page.el("#tests-box summary").click()
    assert not page.el("#run-tests").is_enabled()  # nothing to run yet
    add_case(page, "adds", "1 2", "3")
    add_case(page, "wrong on purpose", "2 2", "5")
    add_case(page, "bad input", "x", "")
    assert page.text("#tests-count") == "(3)"

    page.el("#run-tests").click()
    page.wait(
        lambda: all(verdicts(page)) and "RUNNING" not in verdicts(page), RUN_TIMEOUT, what="a verdict for every case"
    )
    assert wait_finished(page) == "COMPLETED"
    assert verdicts(page) == ["ACCEPTED", "WRONG_ANSWER", "RUNTIME_ERROR"]
    assert colour(page, 0) == GREEN and colour(page, 1) == RED and colour(page, 2) == RED
    assert page.text("#tests-summary") == "1 of 3 passed · first failure: WRONG ANSWER"
    if os.environ.get("LIVECODE_TESTS_PANEL_SCREENSHOT"):  # docs/tests-panel.png
        page.driver.execute_script("document.getElementById('tests-box').scrollIntoView()")
        page.driver.save_screenshot(os.environ["LIVECODE_TESTS_PANEL_SCREENSHOT"])
    outputs = page.driver.execute_script(
        "return [...document.querySelectorAll('.test-output')].map(o => o.hidden ? null : o.textContent)"
    )
    assert outputs[0] == "3\n" and outputs[1] == "4\n" and "ValueError" in outputs[2]

    # What the page sent and what the API stored agree.
    execution = client.request("GET", f"/api/v1/executions/session/{sid}").json()["items"][0]
    assert [t["name"] for t in execution["tests"]] == ["adds", "wrong on purpose", "bad input"]
    assert execution["summary"] == {"passed": 1, "total": 3, "verdict": "WRONG_ANSWER"}
    page.wait(lambda: "1/3 tests passed" in page.text("#history"), what="the run in the history")

    # The cases stay with the session, and its last run's verdicts come back with it.
    page.reload()
    assert page.session_id() == sid
    assert len(page.els(".test-case")) == 3
    page.wait(
        lambda: verdicts(page) == ["ACCEPTED", "WRONG_ANSWER", "RUNTIME_ERROR"],
        what="the last run's verdicts after reload",
    )

    # Editing a case clears the verdicts (they were for the old cases); fixing it turns it green.
    expected = page.els(".test-case")[1].find_element("css selector", ".test-expected")
    expected.clear()
    expected.send_keys("4")
    assert verdicts(page) == ["", "", ""]
    page.el("#run-tests").click()
    page.wait(lambda: verdicts(page)[:2] == ["ACCEPTED", "ACCEPTED"], RUN_TIMEOUT, what="the fixed case")
    assert colour(page, 1) == GREEN
