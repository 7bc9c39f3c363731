"""What Judge0 CE 1.13.1 clients look up: language ids, statuses, the configuration (/config_info,
all 39 keys, saying truthfully what LiveCode does) and /about ("version": "1.13.1", which clients
use to pick their table of language ids)."""

from __future__ import annotations

from typing import Any

from ...config import Settings
from ...infra.languages import LanguageCatalog, LocalLanguages
from ...sandbox.languages import get_language

JUDGE0_VERSION = "1.13.1"

# Judge0 CE 1.13.1's ids of the languages LiveCode runs. 52 is the older C++ id some clients
# still send; both run LiveCode's one C++.
LANGUAGE_IDS: dict[int, str] = {
    71: "python",
    63: "javascript",
    50: "c",
    54: "cpp",
    52: "cpp",
    62: "java",
    60: "go",
    73: "rust",
    46: "bash",
}
# The names Judge0 gives them (the toolchain version is LiveCode's own).
LANGUAGE_NAMES = {
    "python": "Python",
    "javascript": "JavaScript (Node.js",
    "c": "C (GCC",
    "cpp": "C++ (GCC",
    "java": "Java (OpenJDK",
    "go": "Go",
    "rust": "Rust",
    "bash": "Bash",
}

# status.rb: id -> description.
STATUSES: dict[int, str] = {
    1: "In Queue",
    2: "Processing",
    3: "Accepted",
    4: "Wrong Answer",
    5: "Time Limit Exceeded",
    6: "Compilation Error",
    7: "Runtime Error (SIGSEGV)",
    8: "Runtime Error (SIGXFSZ)",
    9: "Runtime Error (SIGFPE)",
    10: "Runtime Error (SIGABRT)",
    11: "Runtime Error (NZEC)",
    12: "Runtime Error (Other)",
    13: "Internal Error",
    14: "Exec Format Error",
}

MAX_BATCH = 20
NO_QUEUE_CAP = 2**31 - 1  # LiveCode refuses no submission for the queue's length
MAX_ARGUMENTS_LENGTH = 512
CALLBACK_MAX_TRIES = 3  # Judge0's CALLBACKS_MAX_TRIES default


def statuses() -> list[dict[str, Any]]:
    return [{"id": i, "description": d} for i, d in STATUSES.items()]


def _name(lang_id: str, version: str) -> str:
    base = LANGUAGE_NAMES[lang_id]
    if base.endswith(("(Node.js", "(GCC", "(OpenJDK")):
        return f"{base} {version})" if version else base + ")"
    return f"{base} ({version})" if version else base


def languages(catalog: LanguageCatalog | None, *, include_archived: bool = False) -> list[dict[str, Any]]:
    """/languages (runnable ones: {id, name}) or /languages/all (every id, with is_archived)."""
    entries = {str(e["id"]): e for e in (catalog or LocalLanguages()).listing()}
    runnable = (catalog or LocalLanguages()).runnable()
    out = []
    for judge0_id, lang_id in LANGUAGE_IDS.items():
        entry = entries.get(lang_id, {})
        archived = (lang_id not in runnable) if runnable is not None else False
        if archived and not include_archived:
            continue
        item: dict[str, Any] = {"id": judge0_id, "name": _name(lang_id, str(entry.get("version") or ""))}
        if include_archived:
            item["is_archived"] = archived
        out.append(item)
    return sorted(out, key=lambda i: (i["name"], i["id"]))


def language(catalog: LanguageCatalog | None, judge0_id: int) -> dict[str, Any] | None:
    """/languages/{id}: the commands are LiveCode's own (argv lists, shown joined)."""
    lang_id = LANGUAGE_IDS.get(judge0_id)
    lang = get_language(lang_id) if lang_id else None
    if lang is None or lang_id is None:
        return None
    listed = {i["id"]: i for i in languages(catalog, include_archived=True)}[judge0_id]
    return {
        "id": judge0_id,
        "name": listed["name"],
        "is_archived": listed["is_archived"],
        "source_file": lang.source_file,
        "compile_cmd": " ".join(lang.compile) if lang.compile else None,
        "run_cmd": " ".join(lang.run),
    }


def defaults(settings: Settings) -> dict[str, Any]:
    """The options a submission gets when it names none, in Judge0's units (seconds, KB)."""
    return {
        "number_of_runs": 1,
        "cpu_time_limit": settings.time_limit_ms / 1000,
        "cpu_extra_time": 0.0,
        "wall_time_limit": settings.time_limit_ms / 1000,
        "memory_limit": settings.memory_limit_mb * 1024,
        "stack_limit": settings.stack_limit_kb,
        "max_processes_and_or_threads": settings.max_processes,
        "enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "max_file_size": settings.file_size_limit_kb,
        "redirect_stderr_to_stdout": False,
        "enable_network": False,
    }


def maxima(settings: Settings) -> dict[str, float]:
    """The most each limit may be, in Judge0's units: a submission asking for more gets this."""
    return {
        "cpu_time_limit": settings.max_time_limit_ms / 1000,
        "cpu_extra_time": settings.max_time_limit_ms / 1000,
        "wall_time_limit": settings.max_time_limit_ms / 1000,
        "memory_limit": settings.max_memory_limit_mb * 1024,
        "stack_limit": settings.max_stack_limit_kb,
        "max_processes_and_or_threads": settings.max_processes,
        "max_file_size": settings.max_file_size_limit_kb,
    }


def config_info(settings: Settings) -> dict[str, Any]:
    """Judge0's 39 configuration keys, each saying what LiveCode does (options it does not
    support are disabled, its limits are LiveCode's, in Judge0's units)."""
    d, m = defaults(settings), maxima(settings)
    return {
        "maintenance_mode": False,
        "enable_wait_result": True,
        "enable_compiler_options": False,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": True,
        "enable_submission_delete": True,
        "enable_callbacks": True,
        "callbacks_max_tries": CALLBACK_MAX_TRIES,
        "callbacks_timeout": settings.webhook_timeout_s,  # one try's timeout, as every webhook's
        "enable_additional_files": True,
        "max_queue_size": NO_QUEUE_CAP,
        "cpu_time_limit": d["cpu_time_limit"],
        "max_cpu_time_limit": m["cpu_time_limit"],
        "cpu_extra_time": d["cpu_extra_time"],
        "max_cpu_extra_time": m["cpu_extra_time"],
        "wall_time_limit": d["wall_time_limit"],
        "max_wall_time_limit": m["wall_time_limit"],
        "memory_limit": d["memory_limit"],
        "max_memory_limit": m["memory_limit"],
        "stack_limit": d["stack_limit"],
        "max_stack_limit": m["stack_limit"],
        "max_processes_and_or_threads": d["max_processes_and_or_threads"],
        "max_max_processes_and_or_threads": m["max_processes_and_or_threads"],
        "enable_per_process_and_thread_time_limit": False,
        "allow_enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "allow_enable_per_process_and_thread_memory_limit": False,
        "max_file_size": d["max_file_size"],
        "max_max_file_size": m["max_file_size"],
        "number_of_runs": 1,
        "max_number_of_runs": 1,
        # As Judge0's (config.rb): the value a submission that does not name it gets. Every
        # submission may ask for true (supported, as on Judge0, which has no allow_ key for it).
        "redirect_stderr_to_stdout": d["redirect_stderr_to_stdout"],
        "max_extract_size": settings.max_files_bytes // 1024,
        "enable_batched_submissions": True,
        "max_submission_batch_size": MAX_BATCH,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": False,
        "allow_enable_network": False,
        "enable_network": False,
    }


def about() -> dict[str, Any]:
    from ... import __version__

    return {
        "version": JUDGE0_VERSION,
        "homepage": "https://judge0.com",
        "source_code": "https://github.com/judge0/judge0",
        "maintainer": "LiveCode (a Judge0 CE 1.13.1-compatible API; not Judge0 itself)",
        "livecode_version": __version__,
    }
