"""Redis commands sent now, their replies read later: a round trip that overlaps other work.

A request that must hear Redis's answer before it goes on (a rate-limit charge before the insert)
need not wait for it while it talks to PostgreSQL; one whose answer changes nothing it sends (the
QUEUED event and the run's message, whose failure only logs: the row stays QUEUED and the
reconciler queues it) can read it after its response has left. `send()` writes the commands on a
pooled connection and returns a `Pending`; `Pending.replies()` reads them (once) and gives the
connection back. A connection error on either side resends the whole pipeline through redis-py's
own `execute()`, with its retries, as a plain pipeline would have done; like redis-py's own retry,
that may repeat commands Redis had already run before the connection broke (a charge counted
twice, a run's message pushed twice: its claim is a conditional UPDATE, so it runs once). A
caller for whom a repeat is visible (a stream's events) asks for no resend once the commands
were written (`resend_after_write=False`): a failed read then raises.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

_hiredis_pack: Any
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py's own packer then
    _hiredis_pack = None

log = logging.getLogger(__name__)

_RESEND = (RedisConnectionError, RedisTimeoutError, OSError)


class Pending:
    """Replies still on the wire. Read them with replies(), or give them up with close()."""

    def __init__(self, client: Any, commands: list[tuple[Any, ...]], resend_after_write: bool = True) -> None:
        self.client = client
        self.commands = commands
        self.resend_after_write = resend_after_write
        self.conn: Any = None
        self.result: list[Any] | None = None

    def _send(self) -> None:
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(_pack(conn, self.commands))
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        self.conn = conn

    @property
    def on_the_wire(self) -> bool:
        """The commands were written (their replies are unread); False when the send failed and
        replies() will send them again."""
        return self.conn is not None

    def replies(self) -> list[Any]:
        """The commands' replies in order; an error reply raises (as pipeline.execute() does)
        once every reply is read. Idempotent."""
        if self.result is not None:
            return self.result
        conn, self.conn = self.conn, None
        if conn is None:  # the send failed: a plain pipeline, with redis-py's retries
            self.result = self._resend()
            return self.result
        pool = self.client.connection_pool
        replies: list[Any] = []
        failure: Exception | None = None
        try:
            for _ in self.commands:
                try:
                    replies.append(conn.read_response())
                except _RESEND:
                    raise
                except Exception as exc:  # noqa: BLE001 - an error reply: the others still come
                    failure = failure or exc
                    replies.append(exc)
        except _RESEND:
            conn.disconnect()
            pool.release(conn)
            if not self.resend_after_write:  # Redis may have run them: raise, as a Pipeline would
                raise
            self.result = self._resend()
            return self.result
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        pool.release(conn)
        self.result = replies
        if failure is not None:
            raise failure
        return replies

    def close(self) -> None:
        """Give the connection back without reading: it is disconnected (its replies unread)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.disconnect()
            self.client.connection_pool.release(conn)

    def _resend(self) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for args in self.commands:
            pipe.execute_command(*args)
        return pipe.execute()  # type: ignore[no-any-return]


def _pack(conn: Any, commands: list[tuple[Any, ...]]) -> Any:
    """The commands in Redis's protocol, as conn.pack_commands gives them. redis-py encodes each
    argument through its Encoder before hiredis packs the command (a Python call per argument:
    ~300 per submission, whose event, message and charge have ~30); hiredis packs str (UTF-8),
    bytes, int and float itself, to the same bytes. Any other argument, or an encoder set to
    something else than UTF-8 (strict), goes through redis-py, which accepts or refuses it as before."""
    encoder = conn.encoder
    if (
        _hiredis_pack is not None
        and encoder.encoding == "utf-8"
        and encoder.encoding_errors == "strict"
        # redis-py splits a command name with a space ("CLIENT SETINFO") into two arguments
        and not any(" " in args[0] if isinstance(args[0], str) else b" " in args[0] for args in commands)
    ):
        try:
            return [b"".join([_hiredis_pack(args) for args in commands])]
        except (TypeError, UnicodeError):
            pass
    return conn.pack_commands(commands)


def send(client: Any, commands: list[tuple[Any, ...]], resend_after_write: bool = True) -> Pending:
    """Write `commands` (each a tuple of a command's arguments) on a connection of `client` (a
    redis.Redis) at once, as one pipeline; read their replies with the returned Pending. A send
    that failed is done again, as a plain pipeline, by replies(). `resend_after_write=False`:
    commands that were written are never sent again (a reply's read that fails raises, as a
    redis-py Pipeline without retries does), for commands whose repetition a reader would see
    (events appended to a stream)."""
    pending = Pending(client, commands, resend_after_write)
    try:
        pending._send()
    except _RESEND:
        log.debug("redis send failed; resent when the replies are read", exc_info=True)
    return pending
