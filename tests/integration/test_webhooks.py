"""Webhooks on a real stack (its own PostgreSQL, Redis, API and Celery workers; the sandbox runs
the programs): a real HTTP receiver on loopback gets signed deliveries from the worker, a 500 is
retried, a worker SIGKILLed with a delivery in flight (its result already written) leaves it to be
made by another worker, and a worker without the allow-list refuses loopback at connect time."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from livecode.services.webhooks.signing import verify
from tests.support.procs import wait_for
from tests.support.receiver import receiver
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOOPBACK = "127.0.0.0/8,::1"  # the API's and the workers' allow-list: the receiver is on loopback


@pytest.fixture(scope="module")
def module_stack() -> Iterator[Stack]:
    s = Stack(
        LIVECODE_WEBHOOK_ALLOW=LOOPBACK,
        LIVECODE_WEBHOOK_BACKOFF_S="0.5",
        LIVECODE_WEBHOOK_TIMEOUT_S="1",
        LIVECODE_WEBHOOK_SWEEP_INTERVAL_S="0.5",
    )
    yield s
    s.destroy()


@pytest.fixture
def stack(module_stack: Stack) -> Iterator[Stack]:
    yield module_stack
    module_stack.restore()  # no worker left for the next test


def deliveries(stack: Stack, eid: str) -> list[dict[str, Any]]:
    r = stack.client().request("GET", f"/api/v1/executions/{eid}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]  # type: ignore[no-any-return]


def run_with_callback(stack: Stack, url: str, source: str = "print('done')") -> str:
    client = stack.client()
    sid = client.create_session(source)["session_id"]
    r = client.execute(sid, callback_url=url)
    assert r.status_code == 202, r.text
    return r.json()["execution_id"]  # type: ignore[no-any-return]


def test_signed_deliveries_retry_after_a_500_and_judge0_callbacks(stack: Stack) -> None:
    stack.start_worker("hooks1")
    secret = stack.client().request("POST", "/api/v1/webhooks/secret").json()["secret"]
    with receiver(statuses=[500]) as rec:
        eid = run_with_callback(stack, rec.url("/livecode"))
        token = (
            stack.client()
            .request(
                "POST",
                "/judge0/submissions",
                json={"source_code": "print(6 * 7)", "language_id": 71, "callback_url": rec.url("/judge0")},
            )
            .json()["token"]
        )
        got = rec.wait_for(3)
        end = time.monotonic() + 60  # a Judge0 PUT may come before the LiveCode retry
        while sum(r.path == "/livecode" for r in got) < 2 and time.monotonic() < end:
            time.sleep(0.05)
    livecode = [r for r in got if r.path == "/livecode"]
    assert len(livecode) == 2  # the 500, then the retry
    for r in livecode:
        assert verify(secret, int(r.headers["X-LiveCode-Timestamp"]), r.body, r.headers["X-LiveCode-Signature"])
    final = json.loads(livecode[1].body)["execution"]
    assert (final["execution_id"], final["status"], final["stdout"]) == (eid, "COMPLETED", "done\n")
    tries = deliveries(stack, eid)[0]
    assert tries["state"] == "delivered" and [t["status_code"] for t in tries["tries"]] == [500, 200]
    judge0 = [r for r in got if r.path == "/judge0"]
    assert len(judge0) == 1 and judge0[0].method == "PUT"
    body = json.loads(judge0[0].body)
    assert body["token"] == token and base64.b64decode(body["stdout"]) == b"42\n"
    assert body["status"] == {"id": 3, "description": "Accepted"}


def test_a_worker_killed_between_the_result_and_the_delivery(stack: Stack) -> None:
    worker = stack.start_worker("hooks2")
    with receiver(hold_first=True) as rec:
        eid = run_with_callback(stack, rec.url())
        assert rec.got.wait(90), "no delivery was attempted"
        assert stack.execution_row(eid)["status"] == "COMPLETED"  # the result was written first
        worker.signal(signal.SIGKILL)  # the delivery is in flight: never answered
        wait_for(lambda: not worker.alive(), 10, what="the killed worker to be gone")
        rec.release.set()
        stack.start_worker("hooks3")
        got = rec.wait_for(2, timeout=90)  # the lease ran out; another worker made it
    assert got[0].headers["X-LiveCode-Delivery"] == got[1].headers["X-LiveCode-Delivery"]
    row = wait_for(lambda: (d := deliveries(stack, eid)[0])["state"] == "delivered" and d, 30, what="delivered")
    assert [t["status_code"] for t in row["tries"]] == [200]


def test_without_the_allow_list_a_worker_refuses_loopback_at_connect_time(stack: Stack) -> None:
    # The API accepted the URL (its allow-list opens loopback); this worker's does not: the name
    # resolves to 127.0.0.1 when it connects, and nothing is sent.
    stack.start_worker("hooks4", LIVECODE_WEBHOOK_ALLOW="")
    with receiver() as rec:
        eid = run_with_callback(stack, rec.url(host="localhost"))
        row = wait_for(lambda: (d := deliveries(stack, eid)[0])["state"] == "failed" and d, 90, what="refused")
        assert rec.requests == []
    assert row["attempts"] == 1 and "refused" in row["tries"][0]["error"] and "loopback" in row["tries"][0]["error"]
