"""The one task: take an execution id, claim the row, run it in the sandbox, record the result.

Retries cover infrastructure (a lost database connection), never the user's program: a program
that fails, times out or floods is a result, recorded once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from celery import Task
from celery.exceptions import Retry

from ..db import is_unavailable
from ..errors import internal_error_message, new_error_id
from ..models import ExecutionStatus, utcnow
from ..runtime import Runtime, runtime
from ..sandbox import Outcome, RunResult, SandboxLimits
from ..sandbox.outputs import OutputFile
from ..services.executions import (
    ClaimedRun,
    claim_execution,
    effective_cpu_ms,
    fail_queued,
    finish_execution_returning,
)
from ..services.output_files import output_limits
from ..streaming.publisher import FIRST_HOLD_S, OutputPublisher, event_running, publish_finished
from .cache_use import compile_cached
from .celery_app import TASK_NAME, celery
from .deadletter import record_dead_letter
from .heartbeat import identity
from .internal_error import internal_error_stderr
from .metrics import record_outcome
from .sandbox_runner import get_process_runner
from .test_runs import run_tests_claimed
from .webhooks import notify as notify_webhooks

log = logging.getLogger(__name__)

OUTCOME_STATUS: dict[Outcome, tuple[ExecutionStatus, str | None]] = {
    Outcome.OK: (ExecutionStatus.COMPLETED, None),
    Outcome.RUNTIME_ERROR: (ExecutionStatus.FAILED, "RUNTIME_ERROR"),
    Outcome.COMPILE_ERROR: (ExecutionStatus.FAILED, "COMPILE_ERROR"),
    Outcome.MEMORY_LIMIT: (ExecutionStatus.FAILED, "MEMORY_LIMIT"),
    Outcome.OUTPUT_LIMIT: (ExecutionStatus.FAILED, "OUTPUT_LIMIT"),
    Outcome.INTERNAL_ERROR: (ExecutionStatus.FAILED, "INTERNAL_ERROR"),
    Outcome.TIME_LIMIT: (ExecutionStatus.TIMEOUT, "TIME_LIMIT"),
    Outcome.CANCELLED: (ExecutionStatus.CANCELLED, "CANCELLED"),
}

_active = 0
_active_lock = threading.Lock()


def active_runs() -> int:
    return _active


def limits_for(claimed: ClaimedRun, rt: Runtime) -> SandboxLimits:
    s = rt.settings
    asked = claimed.limits
    return SandboxLimits(
        time_limit_ms=asked.get("time_limit_ms", s.time_limit_ms),
        cpu_time_ms=effective_cpu_ms(asked, s.time_limit_ms),
        cpu_extra_ms=asked.get("cpu_extra_ms", 0),
        memory_mb=asked.get("memory_limit_mb", s.memory_limit_mb),
        max_processes=asked.get("max_processes", s.max_processes),
        max_output_bytes=asked.get("max_output_bytes", s.max_output_bytes),
        max_file_size_kb=asked.get("max_file_size_kb", s.file_size_limit_kb),
        stack_kb=asked.get("stack_kb", s.stack_limit_kb),
    )


def result_columns(result: RunResult) -> dict[str, Any]:
    return {
        "reason": OUTCOME_STATUS[result.outcome][1],
        "stdout": result.stdout_bytes,
        "stderr": result.stderr_bytes,
        "compile_output": result.compile_output_bytes,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "exit_code": result.exit_code,
        "signal": result.signal,
        "execution_time_ms": result.wall_time_ms,
        "cpu_time_ms": result.cpu_time_ms,
        "memory_kb": result.memory_kb,
        "files_truncated": result.files_truncated,
    }


def outcome_columns(result: RunResult, extra: dict[str, Any]) -> tuple[ExecutionStatus, dict[str, Any]]:
    """The final status and result columns of a single run."""
    status = OUTCOME_STATUS[result.outcome][0]
    cols = result_columns(result)
    if result.outcome == Outcome.INTERNAL_ERROR:
        cols["stderr"] = internal_error_stderr(result, extra)
    return status, cols


def _save(
    rt: Runtime,
    claimed: ClaimedRun,
    status: ExecutionStatus,
    cols: dict[str, Any],
    extra: dict[str, Any],
    files: Sequence[OutputFile] = (),
) -> tuple[dict[str, Any] | None, ExecutionStatus]:
    """Write the result. When that fails for good (not a lost connection), the run is recorded as
    FAILED/INTERNAL_ERROR without its output, with a generic message and an error id for the
    user; the exception goes to the operator's log with the same id (the engine hides statement
    parameters, so the program's output is not in it). Raises only if that fails too.
    Returns the finished execution (None if the row was not this attempt's to write) and the
    status it was given."""
    try:
        return _save_with_backoff(rt, claimed, status, cols, rt.settings.task_max_retries, files), status
    except Exception as exc:
        if is_unavailable(exc):
            raise
        if files:  # the files are what the database refused: the result is still the run's result
            log.error(
                "could not store the run's output files; saving its result without them", exc_info=True, extra=extra
            )
            return _save(rt, claimed, status, {**cols, "files_truncated": True}, extra)
        error_id = new_error_id()
        log.error(
            "could not save the result (error id %s)", error_id, exc_info=True, extra={**extra, "error_id": error_id}
        )
    fallback = {
        "reason": "INTERNAL_ERROR",
        "stderr": internal_error_message(error_id).encode(),
        "execution_time_ms": cols.get("execution_time_ms"),
    }
    failed = ExecutionStatus.FAILED
    return _save_with_backoff(rt, claimed, failed, fallback, rt.settings.task_max_retries), failed


def _save_with_backoff(
    rt: Runtime,
    claimed: ClaimedRun,
    status: ExecutionStatus,
    cols: dict[str, Any],
    max_retries: int,
    files: Sequence[OutputFile] = (),
) -> dict[str, Any] | None:
    """Write the result, retrying a lost database 2^n s apart. The program is not run again."""
    for attempt in range(max_retries + 1):
        try:
            return finish_execution_returning(rt.db, claimed.execution_id, claimed.attempt, status, files, **cols)
        except Exception as exc:
            if not is_unavailable(exc) or attempt == max_retries:
                raise
            time.sleep(2**attempt)
    return None


def run_claimed(rt: Runtime, claimed: ClaimedRun, on_output: OutputPublisher) -> RunResult:
    eid = str(claimed.execution_id)
    # The files the run leaves in out/ come back too (within the configured limits).
    request = replace(
        claimed.run_request(limits_for(claimed, rt), stdin=claimed.stdin, args=tuple(claimed.args)),
        outputs=output_limits(rt.settings),
    )

    # Input (interactive runs) and the signals a user sends (POST .../cancel) come from the run's
    # channel (streaming/stdin.py), whichever process took them.
    channel = rt.stdin.run_input(eid, claimed.interactive)
    try:
        return get_process_runner(rt.settings).run(
            request,
            on_output=on_output,
            stdin_source=channel.stdin if claimed.interactive else None,
            signal_source=channel.signals,
            on_run_stage=on_output.run_stage,
        )
    finally:
        if claimed.interactive or channel.received_signal:
            rt.stdin.discard(eid)


class ExecutionTask(Task):
    abstract = True

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, Retry):
            return
        execution_id = args[0] if args else task_id
        first = (kwargs or {}).get("first_failed_at")
        record_dead_letter(
            runtime(),
            execution_id,
            self.name,
            exc,
            self.request.retries + 1,
            datetime.fromisoformat(first) if first else None,
        )


@celery.task(
    bind=True,
    base=ExecutionTask,
    name=TASK_NAME,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=3,
    soft_time_limit=300,
    time_limit=330,
)
def execute_code_task(self: Task, execution_id: str, first_failed_at: str | None = None) -> str:
    global _active
    rt = runtime()
    worker = identity(self.request.hostname or "worker")
    extra = {"execution_id": execution_id, "request_id": getattr(self.request, "request_id", None), "worker": worker}
    try:
        claimed = claim_execution(rt.db, uuid.UUID(execution_id), worker)
    except Exception as exc:
        if is_unavailable(exc) and self.request.retries < rt.settings.task_max_retries:
            log.warning("database unavailable; retrying", extra=extra)
            # The retry carries when the first attempt failed, for the dead letter if all fail.
            first = first_failed_at or utcnow().isoformat()
            raise self.retry(
                exc=exc,
                countdown=2**self.request.retries,
                max_retries=rt.settings.task_max_retries,
                kwargs={"first_failed_at": first},
            ) from exc
        raise
    if claimed is None:
        log.info("execution not QUEUED; nothing to do", extra=extra)
        record_outcome(rt, "skipped")
        return "skipped"
    extra["request_id"] = claimed.request_id
    log.info("execution started", extra={**extra, "language": claimed.language, "attempt": claimed.attempt})
    # RUNNING, then the output, from a thread of its own: neither the run nor a slow bus waits on
    # the other. An interactive run's RUNNING goes at once (its user may wait for it to type).
    on_output = OutputPublisher(
        rt.events,
        execution_id,
        first=[event_running(claimed.attempt)],
        first_hold_s=0 if claimed.interactive else FIRST_HOLD_S,
    )
    with _active_lock:
        _active += 1
    files: Sequence[OutputFile] = ()  # what the run left in out/, stored with its result
    try:
        if claimed.tests is not None:  # test cases: compile once, run once per test
            status, cols = run_tests_claimed(rt, claimed, limits_for(claimed, rt), extra, on_output)
        else:
            result = run_claimed(rt, claimed, on_output)
            files = result.files
            status, cols = outcome_columns(result, extra)
            cols["compile_cached"] = compile_cached(
                claimed.language, result.cached, result.outcome == Outcome.INTERNAL_ERROR
            )
    except BaseException:
        on_output.close()  # the run failed (no sandbox, ...): what the publisher held goes out now
        raise
    finally:
        with _active_lock:
            _active -= 1
        on_output.close(wait=False)  # no more output: its thread stops while the result is saved
    reason = cols.get("reason")
    saved = False
    try:
        final, status = _save(rt, claimed, status, cols, extra, files)
        saved = True
    finally:
        # Every output event goes out before the final ones: what the publisher had not sent yet
        # (a short run's RUNNING and output) goes in their round trip. If the row was another
        # attempt's, that attempt's end is already out: nothing more is published. If the save
        # failed, it goes out now.
        held = on_output.close(keep=saved)
    log.info(
        "execution finished",
        extra={
            **extra,
            "status": status.value,
            "reason": reason,
            "saved": final is not None,
            "execution_time_ms": cols.get("execution_time_ms"),
        },
    )
    if final is not None:
        # The row the UPDATE returned and the three final events (after what was held), one round trip.
        publish_finished(rt.events, execution_id, status.value, final, held)
        if claimed.has_webhooks:  # after the terminal write; a queue put, the calls are made elsewhere
            notify_webhooks(execution_id)
    record_outcome(rt, status.value, final)  # from the returned row: nothing is read again
    return status.value


def give_up(execution_id: str, message: str) -> None:
    """Mark an execution FAILED when its task will not be tried again."""
    try:
        fail_queued(runtime().db, uuid.UUID(execution_id), "WORKER_LOST", message)
    except Exception:  # noqa: BLE001
        log.exception("could not mark execution failed", extra={"execution_id": execution_id})
