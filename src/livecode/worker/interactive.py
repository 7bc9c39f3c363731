"""Interactive stdin for a running program: lines a WebSocket client sends reach the sandbox."""

from __future__ import annotations

from ..runtime import Runtime
from ..sandbox import StdinSource


def stdin_source_for(rt: Runtime, execution_id: str) -> StdinSource | None:
    """None: the run gets its stored stdin only. Interactive runs are wired in by the streaming
    layer (see livecode.api.stream), which registers a source for the execution id."""
    return None
