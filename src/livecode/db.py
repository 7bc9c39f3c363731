"""Engines and sessions. One `Database` per process, shared by the API and the worker."""

from __future__ import annotations

import collections
import keyword
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from .config import Settings

# Errors meaning "the database is not reachable right now" (worth a 503 or a retry), as opposed to
# errors in what we asked of it.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, PoolTimeout)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def make_engine(url: str, settings: Settings) -> Engine:
    # hide_parameters: a statement's parameters (program output, source code, secrets) never
    # appear in exception messages, hence never in logs, dead letters or anything shown to a user.
    kwargs: dict[str, Any] = {"future": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.update(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=settings.db_pool_recycle,
        pool_pre_ping=settings.db_pool_pre_ping and not settings.db_pool_pre_ping_bypass_ms,
        pool_timeout=max(1, settings.db_connect_timeout_s * 2),
        # The most recently returned connection first: sequential requests after a burst keep
        # using the same few connections, whose statements psycopg has prepared (after 5 uses)
        # and whose pre-ping the bypass window skips; FIFO rotated through every connection the
        # burst opened. The others idle and are recycled or checked when next used.
        pool_use_lifo=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_s,
            # TCP keepalives so a vanished server is noticed instead of hanging a request.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
        },
    )
    engine = create_engine(url, **kwargs)
    if settings.db_pool_pre_ping and settings.db_pool_pre_ping_bypass_ms:
        _ping_unless_just_used(engine, settings.db_pool_pre_ping_bypass_ms / 1000)
    _statement_modes(engine)
    return engine


# Execution options of the PostgreSQL engines (Database sets them): AUTOCOMMIT runs each statement
# as its own transaction (psycopg's autocommit mode); PIPELINED_BEGIN, with it, opens a transaction
# with the first statement, its BEGIN in that statement's round trip (_statement_modes).
AUTOCOMMIT = "livecode_autocommit"
PIPELINED_BEGIN = "livecode_pipelined_begin"


def _statement_modes(engine: Engine) -> None:
    """The connection's mode, set per statement from its execution options, and a transaction
    whose BEGIN costs no round trip of its own.

    The mode: SQLAlchemy's `isolation_level="AUTOCOMMIT"` execution option set psycopg's
    autocommit and isolation level at every checkout and reset both at every checkin (four
    driver calls, ~200 Python calls, ~10 us of CPU per checkout); here a connection keeps the mode
    it was last used in, and a statement changes it only when it needs the other one (between
    transactions: the connection is idle then). A statement without AUTOCOMMIT (the ORM's, the
    migrations', a plain engine.connect()) runs as before: psycopg opens the transaction.

    The BEGIN: psycopg sends BEGIN before a transaction's first statement and waits for its
    answer (in pipeline mode too: it syncs after BEGIN), so a one-statement transaction took three
    round trips, BEGIN, the statement, COMMIT. With PIPELINED_BEGIN, a statement that finds the
    connection outside a transaction goes in one pipeline after an explicit BEGIN: one round trip
    for both, then the transaction is open as with psycopg's own BEGIN (the connection's commit()
    and rollback() send COMMIT and ROLLBACK whenever a transaction is open, autocommit or not; a
    failed BEGIN or statement leaves the transaction aborted, and the rollback ends it)."""

    def prepare(cursor: Any, context: Any) -> Any:
        """Set the connection's mode; return it when this statement must open the transaction."""
        conn = cursor.connection
        options = context.execution_options if context is not None else {}
        # SQLAlchemy's own isolation_level="AUTOCOMMIT" (alembic's autocommit_block) is honoured too.
        autocommit = bool(options.get(AUTOCOMMIT)) or options.get("isolation_level") == "AUTOCOMMIT"
        idle = conn.pgconn.transaction_status == _IDLE
        if conn.autocommit != autocommit and idle:  # inside a transaction, its statements stay in it
            conn.autocommit = autocommit
        return conn if autocommit and idle and options.get(PIPELINED_BEGIN) else None

    def pipelined(cursor: Any, context: Any, send: Any) -> bool:
        """Run the statement (`send`) after a BEGIN in one pipeline when it opens the transaction;
        False (SQLAlchemy runs it as usual) otherwise. Leaving the pipeline sends Sync and reads
        both results."""
        conn = prepare(cursor, context)
        if conn is None:
            return False
        with conn.pipeline():
            cursor.execute(b"BEGIN")
            send()
        return True

    @event.listens_for(engine, "do_execute")
    def _execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        return pipelined(cursor, context, lambda: cursor.execute(statement, parameters))

    @event.listens_for(engine, "do_execute_no_params")
    def _execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
        return pipelined(cursor, context, lambda: cursor.execute(statement))

    @event.listens_for(engine, "do_executemany")
    def _executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        return pipelined(cursor, context, lambda: cursor.executemany(statement, parameters))


def _ping_unless_just_used(engine: Engine, bypass_s: float) -> None:
    """The pre-ping, skipped for a connection given back less than `bypass_s` ago (it answered
    then): on the hot paths (autosave, GET, a run's claim and result) the ping was one of two
    round trips. A connection found dead is replaced before use, as with SQLAlchemy's own
    pre-ping (raising DisconnectionError at checkout makes the pool connect anew); one that died
    within the window fails its statement, which the callers treat as the database being
    unavailable (a 503, a task retry), and the pool is invalidated."""

    @event.listens_for(engine, "checkin")
    def _given_back(_dbapi_conn: Any, record: Any) -> None:
        record.info["given_back"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        given_back = record.info.get("given_back")  # None: a new connection (the info goes with it)
        if given_back is None or time.monotonic() - given_back < bypass_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: replace the connection
            raise DisconnectionError("the pooled connection failed its ping") from exc


_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (psycopg is imported only for PostgreSQL)


class _Plan:
    """A Core statement compiled once for PostgreSQL: its SQL, what its parameters need (the
    statement's own bound values, SQLAlchemy's conversions: JSON to text, ...), its row type."""

    __slots__ = ("sql", "compiled", "processors", "row")

    def __init__(self, compiled: Any, keys: tuple[str, ...]) -> None:
        self.sql = str(compiled)
        self.compiled = compiled
        self.processors = tuple(compiled._bind_processors.items())
        self.row: Any = collections.namedtuple("Row", keys)._make  # type: ignore[misc, attr-defined]

    def parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """What Connection.execute sends the driver for `params` (a missing one raises as there)."""
        out: dict[str, Any] = self.compiled.construct_params(params)
        for name, process in self.processors:
            if name in out:
                out[name] = process(out[name])
        return out


_plans: dict[tuple[Any, str, str], _Plan | None] = {}


def _plan(stmt: Any, dialect: Any) -> _Plan | None:
    """The statement's plan, made once (None: it needs more of SQLAlchemy at each run)."""
    key = (stmt, dialect.name, dialect.driver)
    try:
        return _plans[key]
    except KeyError:
        pass
    compiled = stmt.compile(dialect=dialect)
    keys = tuple(c[0] for c in compiled._result_columns)
    simple = (
        dialect.driver == "psycopg"  # _run speaks psycopg 3
        and bool(keys)  # a statement that returns rows
        and not compiled.literal_execute_params
        and not compiled.post_compile_params
        and not compiled.insert_prefetch  # Python-side defaults, filled per execution
        and not compiled.update_prefetch
        and not getattr(compiled, "escaped_bind_names", None)  # renamed binds: processors keyed otherwise
        and _no_result_processing(compiled, dialect)
        and all(k.isidentifier() and not keyword.iskeyword(k) and not k.startswith("_") for k in keys)
        and len(set(keys)) == len(keys)
    )
    plan = _Plan(compiled, keys) if simple else None
    if len(_plans) < 1000:  # hot statements are built once per shape: few
        _plans[key] = plan
    return plan


def _no_result_processing(compiled: Any, dialect: Any) -> bool:
    """Whether every result column comes from the driver as SQLAlchemy would give it."""
    try:
        return all(c[3]._cached_result_processor(dialect, None) is None for c in compiled._result_columns)
    except Exception:  # a type whose processor needs the cursor's description (Numeric on psycopg)
        return False


def _run(engine: Engine, plan: _Plan, params: dict[str, Any], *, many: bool) -> list[Any]:
    """The statement's rows (`many`), or its first row alone, as `plan.row`s."""
    sent = plan.parameters(params)
    try:
        fairy: Any = engine.raw_connection()  # the pool's checkout, its events (the pre-ping) included
    except engine.dialect.loaded_dbapi.Error as exc:  # as Connection() raises it: wrapped, flagged
        Connection._handle_dbapi_exception_noconnection(exc, engine.dialect, engine)
    try:
        conn = fairy.driver_connection
        if not conn.autocommit and conn.pgconn.transaction_status == _IDLE:
            conn.autocommit = True  # as _statement_modes sets it for an AUTOCOMMIT statement
        cur = conn.execute(plan.sql, sent)
        got = cur.fetchall() if many else [row] if (row := cur.fetchone()) is not None else []
    except BaseException as exc:
        _raise_wrapped(engine, fairy, plan.sql, params, exc)
    fairy.close()  # back to the pool (its reset: nothing to roll back in autocommit)
    return [plan.row(r) for r in got]


def _raise_wrapped(engine: Engine, fairy: Any, sql: str, params: dict[str, Any], exc: BaseException) -> NoReturn:
    """Give the connection back and raise `exc` as Connection.execute would: a driver error
    wrapped in SQLAlchemy's class for it (IntegrityError, OperationalError, ...); a lost
    connection invalidated (the pool replaces it, and every connection older than it) and the
    error flagged connection_invalidated; one left in an unknown state by an interruption
    invalidated alone."""
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    if not isinstance(exc, dbapi_error):
        if isinstance(exc, Exception):  # ours or the adapter's, before anything was sent
            fairy.close()
        else:  # interrupted (KeyboardInterrupt, a timeout's signal): its state unknown
            fairy.invalidate(exc)  # this connection only; checks it in
        raise exc
    lost = bool(dialect.is_disconnect(exc, fairy.driver_connection, None))  # type: ignore[arg-type]
    if lost:
        engine.pool._invalidate(fairy, exc)  # checks it in
    else:
        fairy.close()
    raise DBAPIError.instance(sql, params, exc, dbapi_error, hide_parameters=engine.hide_parameters,
                              connection_invalidated=lost, dialect=dialect) from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.close()


class Database:
    """The primary engine for writes and, when configured, a replica engine for reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url, settings)
        self.replica_engine = (
            make_engine(settings.database_replica_url, settings)
            if settings.database_replica_url
            else self.engine
        )
        # Same pool; a connection checked out through it runs each statement as its own
        # transaction. On PostgreSQL the mode is set by the statements (_statement_modes), and
        # a Core transaction's BEGIN goes with its first statement.
        if self.is_sqlite:
            self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._replica_autocommit = self.replica_engine.execution_options(isolation_level="AUTOCOMMIT")
            self._pipelined = self.engine
        else:
            self._autocommit = self.engine.execution_options(**{AUTOCOMMIT: True})
            self._replica_autocommit = self.replica_engine.execution_options(**{AUTOCOMMIT: True})
            self._pipelined = self.engine.execution_options(**{AUTOCOMMIT: True, PIPELINED_BEGIN: True})
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._replica_factory = sessionmaker(self.replica_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction on the primary, committed on success."""
        with self._factory() as session, session.begin():
            yield session

    @contextmanager
    def write_core(self) -> Iterator[Connection]:
        """A Core transaction on the primary, committed on success, for writes that need none of
        the ORM's bookkeeping. On PostgreSQL its BEGIN goes in the round trip of its first
        statement: a one-statement transaction (a run's claim) is two round trips, not three."""
        with self._pipelined.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write_one(self) -> Iterator[Connection]:
        """A Core connection on the primary for one statement that is its own transaction: a
        single conditional UPDATE ... RETURNING is atomic and durable when it returns, without
        the BEGIN and COMMIT round trips of write_core (half the wall time of a short write)."""
        with self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def read_core(self, fresh: bool = False) -> Iterator[Connection]:
        """A Core connection for hot single-statement reads (no BEGIN/ROLLBACK around them); on
        the replica unless `fresh`."""
        with (self._autocommit if fresh else self._replica_autocommit).connect() as conn:
            yield conn

    @contextmanager
    def read(self, fresh: bool = False) -> Iterator[Session]:
        """A read-only session; on the replica unless `fresh` asks for read-your-writes."""
        factory = self._factory if fresh else self._replica_factory
        with factory() as session:
            yield session

    def first(self, stmt: Any, params: dict[str, Any], *, primary: bool = False) -> Any:
        """The first row of one Core statement run as its own transaction (autocommit), or None:
        what `write_one` (`primary`: a write, or a read that must see the latest writes) or
        `read_core` and `execute(stmt, params).first()` give, for the hot paths. On
        PostgreSQL the statement, compiled once, goes straight to the pooled psycopg connection:
        no execution context, result metadata or row processing per call (a GET's SELECT was
        ~500 Python calls in SQLAlchemy's execute for one round trip). Errors are SQLAlchemy's
        (IntegrityError, OperationalError with connection_invalidated for a lost connection, ...),
        as from Connection.execute. Elsewhere (SQLite), or for a statement whose parameters or
        columns need SQLAlchemy's processing, it is run by Connection.execute."""
        rows = self._rows(stmt, params, primary=primary, many=False)
        return rows[0] if rows else None

    def all_written(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        """Every row one Core write returns (`RETURNING`), run as its own transaction (autocommit)
        on the primary: what `write_one` and `execute(stmt, params).all()` give, by the same
        short path as `first` (the autosave's batch: services/autosave_batch.py)."""
        return self._rows(stmt, params, primary=True, many=True)

    def _rows(self, stmt: Any, params: dict[str, Any], *, primary: bool, many: bool) -> list[Any]:
        """`first`'s and `all_written`'s statement: all its rows (`many`) or its first alone."""
        engine = self.engine if primary else self.replica_engine
        plan = _plan(stmt, engine.dialect) if not self.is_sqlite else None
        if plan is not None:
            return _run(engine, plan, params, many=many)
        with (self._autocommit if primary else self._replica_autocommit).connect() as conn:
            result = conn.execute(stmt, params)
            return list(result.all()) if many else [row] if (row := result.first()) is not None else []

    def ping(self) -> None:
        # Autocommit: one round trip; a transaction's ROLLBACK would also make psycopg forget the
        # connection's prepared statements (it sends DEALLOCATE ALL after a rollback).
        with self._autocommit.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self.replica_engine is not self.engine:
            self.replica_engine.dispose()
