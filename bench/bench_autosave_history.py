"""Autosave through the API with history (and co-editing) on, beside the code before history:
PATCH/s and p99 with 32 connections (bench_cost.autosave: wrk if installed), each variant on a
stack of its own (1 API process, its default threads; a fresh database), the variants alternated
so that the shared machine's load falls on each alike.

Variants:
- `before`: the code before history (a source tree given with --before, e.g. `git archive
  8a5c404^ src | tar -x -C "$BEFORE"`), which the stack's processes run;
- `history`: this code, default interval (60 s); every session's last autosave version is aged
  past the interval first, so each session's first save in the window makes a version (what
  one save a minute per editing session pays), the others are the one UPDATE;
- `every-save`: interval 0, every save runs the version step (the bound);
- `co-edited`: history as above, and every session has a co-edited document (its state in the
  row: services/collab_store.py), so each PATCH also merges the save into it.

A benchmark, never a pass/fail test:

    PYTHONPATH=src:. .venv/bin/python -m bench.bench_autosave_history --before "$BEFORE" --rounds 2
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import psycopg

from bench.bench_cost import autosave, start_stack
from bench.common import machine

VARIANTS = ("before", "history", "every-save", "co-edited")


def _age(pg: psycopg.Connection[Any], sessions: list[str]) -> None:
    pg.execute("UPDATE code_sessions SET history_at = now() - interval '1 hour' WHERE id = ANY(%s::uuid[])",
               (sessions,))


def _co_edit(pg: psycopg.Connection[Any], sessions: list[str]) -> None:
    from livecode.services import collab_doc

    _age(pg, sessions)
    state = collab_doc.seed_state([("main.py", "print('hi')")])
    pg.execute("UPDATE code_sessions SET doc_state = %s, doc_version = version WHERE id = ANY(%s::uuid[])",
               (state, sessions))


def run(variant: str, before: str | None, seconds: int, redis_url: str) -> dict[str, Any]:
    env: dict[str, str] = {}
    if variant == "before":
        if not before:
            raise SystemExit("--before names the source tree of the code before history")
        env["PYTHONPATH"] = f"{os.path.abspath(before)}/src"
    if variant == "every-save":
        env["LIVECODE_HISTORY_AUTOSAVE_INTERVAL_S"] = "0"
    stack = start_stack(redis_url, False, env)
    pg = psycopg.connect(stack.database_url, autocommit=True)
    try:
        prepare = {"before": None, "co-edited": lambda s: _co_edit(pg, s)}.get(variant, lambda s: _age(pg, s))
        return autosave(stack.base, pg, seconds, prepare=prepare)
    finally:
        pg.close()
        stack.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="source tree of the code before history (its src/ is run)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=2, help="each variant this many times, alternated")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--redis-url", default=os.environ.get("LIVECODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    args = p.parse_args()
    print(f"machine: {machine()}")
    for round_no in range(1, args.rounds + 1):
        for variant in args.variants.split(","):
            load = os.getloadavg()[0]
            r = run(variant, args.before, args.seconds, args.redis_url)
            print(f"round {round_no} {variant:10} load {load:4.1f}  {r['per_s']:7.0f} PATCH/s"
                  f"  p99 {r['p99_ms']:6.1f} ms  ok {r['ok']}  durable {r['durable']}", flush=True)


if __name__ == "__main__":
    main()
