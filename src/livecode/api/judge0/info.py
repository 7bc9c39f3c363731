"""/judge0 information endpoints: languages, statuses, about, config_info, version, workers,
system_info, statistics (Judge0 CE 1.13.1's shapes)."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil
from flask import Response
from flask_restx import Resource

from ...services.judge0 import catalog
from ...services.judge0.submissions import statistics
from ...services.stats import broker_queue_lengths
from ..auth import admin_required
from ..context import owner_id, rt
from . import Judge0Error
from .docs import anything, errors, language, ns, status


@ns.route("/languages")
class Languages(Resource):
    @ns.doc("judge0_languages", security=[])
    @ns.response(200, "The languages that can run now", [language])
    @errors
    def get(self) -> Any:
        """Languages ({id, name}) with Judge0 CE 1.13.1's ids."""
        return catalog.languages(rt().languages)


@ns.route("/languages/all")
class AllLanguages(Resource):
    @ns.doc("judge0_all_languages", security=[])
    @ns.response(200, "Every language id, archived ones (not runnable here now) too", [language])
    @errors
    def get(self) -> Any:
        """Every language id this API knows, with is_archived."""
        return catalog.languages(rt().languages, include_archived=True)


@ns.route("/languages/<string:language_id>")
@ns.param("language_id", "a Judge0 language id")
class LanguageItem(Resource):
    @ns.doc("judge0_language", security=[])
    @ns.response(200, "The language", language)
    @errors
    def get(self, language_id: str) -> Any:
        """One language, with its source file name and (LiveCode's) commands."""
        found = (
            catalog.language(rt().languages, int(language_id))
            if language_id.isascii() and language_id.isdigit() and len(language_id) < 10
            else None
        )
        if found is None:
            raise Judge0Error(404, {"error": "not found"})
        return found


@ns.route("/statuses")
class Statuses(Resource):
    @ns.doc("judge0_statuses", security=[])
    @ns.response(200, "The 14 statuses", [status])
    @errors
    def get(self) -> Any:
        """Judge0's statuses (status.rb)."""
        return catalog.statuses()


@ns.route("/about")
class About(Resource):
    @ns.doc("judge0_about", security=[])
    @ns.response(200, "About", anything)
    @errors
    def get(self) -> Any:
        """`version` is 1.13.1: clients pick their table of language ids by it."""
        return catalog.about()


@ns.route("/config_info")
class ConfigInfo(Resource):
    @ns.doc("judge0_config_info", security=[])
    @ns.response(200, "Judge0's 39 configuration keys, saying what LiveCode does", anything)
    @errors
    def get(self) -> Any:
        """What this API allows: options LiveCode does not support are disabled here."""
        return catalog.config_info(rt().settings)


@ns.route("/version")
class Version(Resource):
    @ns.doc("judge0_version", security=[])
    @ns.produces(["text/plain"])
    @ns.response(200, "The Judge0 version this API follows (text)")
    @errors
    def get(self) -> Any:
        """1.13.1, as plain text."""
        return Response(catalog.JUDGE0_VERSION, mimetype="text/plain")


@ns.route("/workers")
class Workers(Resource):
    @ns.doc("judge0_workers")
    @ns.response(200, "Each queue: its length and the workers", [anything])
    @errors
    @admin_required
    def get(self) -> Any:
        """Operators: the queues and the workers serving them."""
        r = rt()
        alive = r.registry.alive()
        working = sum(1 for info in alive.values() if int(info.get("active") or 0) > 0)
        return [
            {
                "queue": name,
                "size": size,
                "available": len(alive),
                "idle": len(alive) - working,
                "working": working,
                "paused": 0,
                "failed": 0,
            }
            for name, size in broker_queue_lengths(r).items()
        ]


@ns.route("/system_info")
class SystemInfo(Resource):
    @ns.doc("judge0_system_info")
    @ns.response(200, "The API host", anything)
    @errors
    @admin_required
    def get(self) -> Any:
        """Operators: the API host's architecture, CPUs and memory."""
        mem = psutil.virtual_memory()
        return {
            "Architecture": platform.machine(),
            "CPU(s)": os.cpu_count(),
            "Model name": platform.processor(),
            "Mem": f"{mem.total // (1024 * 1024)}M",
            "Swap": f"{psutil.swap_memory().total // (1024 * 1024)}M",
        }


@ns.route("/statistics")
class Statistics(Resource):
    @ns.doc("judge0_statistics")
    @ns.response(200, "Counts of the caller's submissions", anything)
    @errors
    def get(self) -> Any:
        """How many submissions, today, in the last 30 days, by language."""
        return statistics(rt().db, owner_id())
