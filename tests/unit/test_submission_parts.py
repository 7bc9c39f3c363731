"""What the one-statement submission (services/submission_sql.py) and the API's task message
(worker/celery_app.py) are built from: the pieces each fills in must give what the long way gives.
No services."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from hashlib import sha256
from typing import Any

import pytest

from livecode.config import load_settings
from livecode.sandbox.languages import all_languages
from livecode.services import history, programs, storage, submission_sql
from livecode.worker.celery_app import TASK_NAME, celery, configure_celery, queue_for, task_message


@pytest.mark.parametrize("language", [lang.id for lang in all_languages()] + ["no-such-language"])
def test_a_single_file_sets_manifest_around_its_hash_is_historys(language: str) -> None:
    before, after = history.single_file_set_parts(language)
    code = "print('h\u00e9llo \U0001f600')\n"
    digest = storage.source_hash(code)
    path = programs.default_path(language)
    assert sha256((before + digest + after).encode()).hexdigest() == history.FileSetRef(
        ((path, digest),), path, {digest: code}).hash


class Catalog:
    def __init__(self, runnable: set[str] | None) -> None:
        self._runnable = runnable

    def listing(self) -> list[dict[str, Any]]:
        return []

    def runnable(self) -> set[str] | None:
        return None if self._runnable is None else set(self._runnable)


def test_the_statements_languages_are_those_check_language_accepts() -> None:
    declared = {lang.id for lang in all_languages()}
    everything = json.loads(submission_sql.language_params(Catalog(None))["p_langs"])  # type: ignore[arg-type]
    assert set(everything) == declared  # no worker has said yet: every declared language
    offered = json.loads(submission_sql.language_params(Catalog({"python", "cobol"}))["p_langs"])  # type: ignore[arg-type]
    assert offered == {"python": [history.single_file_set_parts("python")[0], "main.py"]}  # not an undeclared one
    assert submission_sql.language_params(Catalog(set()))["p_langs"] == "{}"


@pytest.fixture
def configured() -> Iterator[None]:
    previous = celery.conf.get("livecode_settings")
    configure_celery(load_settings("embedded"))
    yield
    if previous is not None:
        configure_celery(previous)


def _long_way(execution_id: uuid.UUID, priority: str, request_id: str | None) -> dict[str, Any]:
    """The message as task_message built it before its template: as_task_v2 on every call."""
    queue = queue_for(celery.conf.livecode_settings, priority)
    eid = str(execution_id)
    task = celery.amqp.as_task_v2(eid, TASK_NAME, args=[eid], reply_to=celery.thread_oid, ignore_result=True,
                                  argsrepr=repr([eid]), kwargsrepr="{}")
    return {
        "body": json.loads(json.dumps(task.body)),
        "headers": json.loads(json.dumps({**task.headers, "request_id": request_id})),
        "properties": json.loads(json.dumps({**task.properties, "delivery_mode": 2,
                                             "delivery_info": {"exchange": "", "routing_key": queue},
                                             "priority": 0, "body_encoding": "base64"})),
    }


@pytest.mark.parametrize("request_id", [None, "req-1", 'a "quoted" \\ r\u00e9quest \U0001f600'])
@pytest.mark.usefixtures("configured")
def test_the_task_message_from_its_template_is_the_one_built_the_long_way(request_id: str | None) -> None:
    tags = set()
    for priority in ("interactive", "batch", "interactive"):
        execution_id = uuid.uuid4()
        queue, raw = task_message(execution_id, priority, request_id)
        assert queue == queue_for(celery.conf.livecode_settings, priority)
        message = json.loads(raw)
        tags.add(message["properties"].pop("delivery_tag"))
        assert message.pop("content-type") == "application/json" and message.pop("content-encoding") == "utf-8"
        message["body"] = json.loads(base64.b64decode(message["body"]))
        assert message == _long_way(execution_id, priority, request_id)
    assert len(tags) == 3  # a fresh delivery tag each


@pytest.mark.usefixtures("configured")
def test_each_thread_gets_its_own_reply_to() -> None:
    mine = json.loads(task_message(uuid.uuid4(), "interactive", None)[1])["properties"]["reply_to"]
    theirs: list[str] = []
    thread = threading.Thread(target=lambda: theirs.append(
        json.loads(task_message(uuid.uuid4(), "interactive", None)[1])["properties"]["reply_to"]))
    thread.start()
    thread.join()
    assert mine == celery.thread_oid and theirs[0] != mine
