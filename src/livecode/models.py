"""SQLAlchemy 2 typed models. The database row is the truth about an execution."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """A stored timestamp as ISO 8601 with its offset (SQLite hands back naive datetimes; every
    timestamp we store is UTC)."""
    if value is None:
        return None
    text = value.isoformat()
    return text if value.tzinfo else text + "+00:00"


class Base(DeclarativeBase):
    pass


class SessionStatus(str, enum.Enum):
    ACTIVE = "ACTIVE"


class ExecutionStatus(str, enum.Enum):
    """The one vocabulary of an execution's states: the API schema's enum, the SQL filters, the
    follower's "has it ended", and the lists the frontend and the tests keep (a unit test checks
    them against this one)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"  # stopped on request: before it ran, or by the signal a user sent

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


# A str enum compares and hashes as its value: `row["status"] in TERMINAL_STATUSES` works on the
# strings the API returns.
TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT, ExecutionStatus.CANCELLED}
)
ACTIVE_STATUSES = frozenset(ExecutionStatus) - TERMINAL_STATUSES  # QUEUED, RUNNING


def status_values(statuses: frozenset[ExecutionStatus]) -> list[str]:
    """The plain strings, for a SQL `IN (...)` (the database column holds the values)."""
    return sorted(s.value for s in statuses)


class Priority(str, enum.Enum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="user")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Bumped by a password change: every token issued before it (access and refresh) is refused.
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))


class RefreshToken(Base):
    """One issued refresh token. Each refresh uses it up and issues the next one of its family;
    presenting a used one again (a stolen copy) revokes the whole family, as does a logout."""

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Invitation(Base):
    """A one-time code that lets someone register when registration is by invitation."""

    __tablename__ = "invitations"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where the runs submitted with this key report their end when the request names no
    # callback_url of its own (services/webhooks).
    callback_url: Mapped[str | None] = mapped_column(Text)


class CodeSession(Base):
    __tablename__ = "code_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    language: Mapped[str] = mapped_column(String(50), nullable=False)
    # The entry's content (the whole program of a single-file session: every client that only
    # knows `source_code` keeps working).
    source_code: Mapped[str] = mapped_column(Text, nullable=False)
    # A multi-file program (services/programs.py): [{"path", "content"}] in the user's order, the
    # entry's content null (it is source_code); NULL for a single-file session.
    files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    entry: Mapped[str | None] = mapped_column(String(1024))  # NULL: the language's default path
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="ACTIVE")
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # History (services/history.py): the number of the newest version, the file set it holds (a
    # run of the same files names that version instead of making another), and when the last
    # autosave version was made (autosave makes one at most every LIVECODE_HISTORY_AUTOSAVE_INTERVAL_S).
    history_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    history_set: Mapped[str | None] = mapped_column(String(64))
    history_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Co-editing (services/collab_store.py): the live document's state (a Yjs update) whose texts
    # are the program's at `doc_version`. Only a document write sets both with the text; any other
    # save (REST autosave, restore) leaves them, so doc_version < version says "merge the text
    # into the state", which whoever comes next does, once (a conditional UPDATE). NULL: never
    # co-edited. Deferred: the ordinary reads of a session never load it.
    doc_state: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    doc_version: Mapped[int | None] = mapped_column(Integer)


class Source(Base):
    """A program's text, stored once however many executions run it (content-addressed): the key
    is the sha256 of its UTF-8 encoding. Executions reference it by hash; the storage job deletes
    a source once no execution references it and it has not been used for a grace period."""

    __tablename__ = "sources"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        # At most one active interactive run per session, enforced by the database so that
        # concurrent execute requests cannot both get through (design 3.3).
        Index(
            "uq_executions_one_active_per_session",
            "session_id",
            unique=True,
            postgresql_where=text("status IN ('QUEUED', 'RUNNING') AND priority = 'interactive'"),
            sqlite_where=text("status IN ('QUEUED', 'RUNNING') AND priority = 'interactive'"),
        ),
        Index("ix_executions_session_queued", "session_id", "queued_at"),
        Index("ix_executions_status_queued", "status", "queued_at"),
        # The admin analytics select by queued_at range (services/analytics.py).
        Index("ix_executions_queued_language", "queued_at", "language"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("code_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    language: Mapped[str] = mapped_column(String(50), nullable=False)
    # The code as it was when the run was submitted, by content hash (see Source). The foreign key
    # is what makes collecting unreferenced sources safe against a concurrent submission.
    source_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("sources.hash", name="fk_executions_source_hash"), nullable=False, index=True
    )
    # A multi-file program's entry (its content is source_hash; every file is in execution_files);
    # NULL for a single-file program.
    entry: Mapped[str | None] = mapped_column(String(1024))
    # The session's history version this run is of (services/history.py); NULL before history.
    history_version: Mapped[int | None] = mapped_column(Integer)
    stdin: Mapped[str] = mapped_column(Text, nullable=False, default="")
    args: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    priority: Mapped[str] = mapped_column(String(16), nullable=False, default="interactive")
    # Keeps stdin open for input sent over the WebSocket until EOF or the time limit.
    interactive: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    # The program's stderr goes into its stdout (2>&1): one stream, in the order written.
    merge_stderr: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    reason: Mapped[str | None] = mapped_column(String(32))
    # Output is bytes (bytea / BLOB): whatever a program writes (NUL, invalid UTF-8) is kept as is;
    # the API decodes a text view, or returns the bytes base64-encoded.
    stdout: Mapped[bytes | None] = mapped_column(LargeBinary)
    stderr: Mapped[bytes | None] = mapped_column(LargeBinary)
    compile_output: Mapped[bytes | None] = mapped_column(LargeBinary)
    stdout_truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    stderr_truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    execution_time_ms: Mapped[int | None] = mapped_column(Integer)
    cpu_time_ms: Mapped[int | None] = mapped_column(Integer)
    memory_kb: Mapped[int | None] = mapped_column(Integer)
    # Some of what the run left in out/ was not kept (over a limit); see ExecutionOutput.
    files_truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    # Test cases (services/testcases.py): the definitions as submitted, the compare mode, and once
    # finished each test's result (output base64-encoded). SQL NULL for a run without tests.
    tests: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    compare_mode: Mapped[str | None] = mapped_column(String(64))
    test_results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    # Compiled languages: the program came from the compile cache (true) or was compiled for this
    # run (false); null when nothing was compiled (interpreted languages).
    compile_cached: Mapped[bool | None] = mapped_column(Boolean)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(64))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class ExecutionFile(Base):
    """One file of a multi-file execution's snapshot, its content stored once in `sources`."""

    __tablename__ = "execution_files"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    source_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("sources.hash", name="fk_execution_files_source_hash"), nullable=False, index=True
    )


class FileSet(Base):
    """A program (its files and entry) stored once however many versions hold it: the key is the
    sha256 of its manifest (services/history.py); the contents are in `sources`."""

    __tablename__ = "file_sets"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    entry: Mapped[str] = mapped_column(String(1024), nullable=False)
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)


class FileSetFile(Base):
    __tablename__ = "file_set_files"

    set_hash: Mapped[str] = mapped_column(String(64), ForeignKey("file_sets.hash", ondelete="CASCADE"),
                                          primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    source_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("sources.hash", name="fk_file_set_files_source_hash"), nullable=False, index=True
    )


class SessionVersion(Base):
    """One version of a session's history: why it was made (execution, checkpoint, autosave,
    restore), by whom, and the file set it holds."""

    __tablename__ = "session_versions"
    __table_args__ = (UniqueConstraint("session_id", "number", name="uq_session_versions_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("code_sessions.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    author_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)
    label: Mapped[str | None] = mapped_column(String(200))
    set_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("file_sets.hash", name="fk_session_versions_set_hash"), nullable=False, index=True
    )
    execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class ExecutionOutput(Base):
    """A file a run left in out/ (a plot, a CSV), kept with its execution and deleted with it."""

    __tablename__ = "execution_outputs"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)  # relative to out/
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    # The key is scoped to its owner and endpoint: one user's key never answers for another.
    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    execution_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    task_name: Mapped[str] = mapped_column(String(200), nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    first_failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Judge0Submission(Base):
    """What a Judge0 submission (the /judge0 API) adds to its execution: the Judge0 language id,
    the expected output (verdicts 3/4) and the options as given, in Judge0's units, to answer
    `fields=*` with. The token is the execution id."""

    __tablename__ = "judge0_submissions"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    language_id: Mapped[int] = mapped_column(Integer, nullable=False)
    expected_output: Mapped[bytes | None] = mapped_column(LargeBinary)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class WebhookSecret(Base):
    """A user's webhook signing secret (HMAC-SHA256). `owner` is the user id, or "local" for the
    single user of a service without accounts. Kept in clear: the worker signs with it."""

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One callback to make when its execution is terminal: the table of due deliveries that the
    worker drains after its final write and sweeps periodically (at least once: a try is leased
    by moving `next_attempt_at` forward, so a worker that dies mid-try leaves it due again)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="livecode")  # or "judge0"
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")  # delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    tries: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
class SessionRole(str, enum.Enum):
    """What a user may do with a session: the owner everything; an editor edit and run; a viewer
    read the session and follow its runs. services/members.py holds the one rule."""

    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class SessionMember(Base):
    """A user the owner shared a session with (directly, or by a share link they redeemed)."""

    __tablename__ = "session_members"

    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("code_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    added_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class ShareLink(Base):
    """A link that makes whoever redeems it a member with `role`, until it expires or is revoked.
    Only the token's sha256 is stored."""

    __tablename__ = "session_share_links"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("code_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    redeemed: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
