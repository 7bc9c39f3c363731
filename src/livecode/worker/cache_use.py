"""What a run says of the compile cache, for the analytics' hit rate (executions.compile_cached)."""

from __future__ import annotations

from ..sandbox import get_language


def compile_cached(language: str, cached: bool, internal_error: bool = False) -> bool | None:
    """Whether a compiled language's program came from the cache (True) or the compiler ran for
    this run (False, a compile error included); None when nothing was compiled: an interpreted
    language, or a sandbox failure (which says nothing of the cache)."""
    lang = get_language(language)
    if lang is None or not lang.compiled or internal_error:
        return None
    return cached
