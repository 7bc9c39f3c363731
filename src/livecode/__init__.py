"""LiveCode: code sessions with autosave, and sandboxed executions in many languages."""

__version__ = "0.1.0"
