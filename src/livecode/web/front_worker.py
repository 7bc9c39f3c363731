"""gunicorn's gthread worker with a front that reads each request before it takes a thread.

Why: gthread hands a connection to the thread pool as soon as its first bytes arrive (or after
5 s of silence), and the thread then reads the headers and the body with blocking reads and no
deadline. A client that sends its headers or body a byte at a time holds a thread for as long
as it likes; a few hundred of them (threads x processes) hold every thread and /health stops
answering. Here the worker's own event loop (the selector gunicorn already runs for accepting
and keep-alive) reads the request line, the headers and a body of known length (or a whole
chunked body) without blocking, within `header_timeout_s` and `body_timeout_s`; only a complete
request is handed to a thread, with the bytes already read given to gunicorn's parser, which
then parses them as usual. Slow clients cost a buffer, not a thread.

Also:
- `connections_per_address`: open connections of one client address in this process; the next
  one is answered 429 TOO_MANY_CONNECTIONS at once and closed.
- `send_timeout_s`: SO_SNDTIMEO (and SO_RCVTIMEO) on every connection, so a write to a client
  that stopped reading (its socket buffer stays full) fails after that long instead of holding
  the thread for ever; the response iterable is then closed (a stream gives back its slot).
- closing a connection gracefully (half-close, then drain what the client still sends) happens
  in the event loop, not by blocking it for up to 2 s per connection as gunicorn does.

Built on gunicorn 27's gthread worker (TConn, enqueue_req, finish_request, murder_pending); the
version range is pinned in pyproject.toml.
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import json
import queue
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.http import message as gunicorn_message
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import after_response, parking

RECV_BYTES = 65536
LINGER_S = 2.0  # how long a half-closed connection is drained (as gunicorn's close_graceful)
_MISSING = object()
SWEEP_S = 0.1  # how often the front looks for connections past their deadline (at most)
HEARTBEAT_S = 1.0  # the arbiter's liveness file is touched, and the parent checked, at most this often


@dataclass(frozen=True)
class FrontLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    send_timeout_s: float = 30.0
    connections_per_address: int = 64  # 0: no cap
    connections_per_process: int = 1000  # gunicorn's worker_connections
    exempt: tuple[str, ...] = ()
    max_body_bytes: int = 2 * 1024 * 1024  # more than this is handed on unread: the app answers 413


def error_response(status: str, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP answer in the API's JSON error shape, for what is answered before Flask."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


TOO_MANY_CONNECTIONS = error_response(
    "429 Too Many Requests", "TOO_MANY_CONNECTIONS",
    "too many open connections from this address; close some and retry", "Retry-After: 1\r\n")
REQUEST_TIMEOUT = error_response(
    "408 Request Timeout", "REQUEST_TIMEOUT", "the request did not arrive in time; send it again, faster")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestReader:
    """Follows one request's bytes as they arrive: where the head ends and how long the body is.
    Each call looks only at what is new (a request sent in many small pieces costs no more than
    one sent at once)."""

    MAX_CHUNK_LINE = 1024  # a chunk-size line longer than this is malformed: the parser says so
    MAX_TRAILERS = 64 * 1024

    def __init__(self, max_head: int, max_body: int) -> None:
        self.max_head, self.max_body = max_head, max_body
        self.scanned = 0  # bytes searched for the end of the head so far
        self.head_end: int | None = None  # where the body starts
        self.length = 0  # the body's length (Content-Length)
        self.chunked = False
        self.expects_continue = False
        self.hand_over_now = False  # malformed or too large: the parser or the app answers
        # Handed over before the whole request was here (a body past the cap, malformed framing,
        # a head too long): the connection must close after the answer, as what is left of the
        # request would otherwise be read as the next one.
        self.partial = False
        self.next_chunk = 0  # where the next chunk-size line starts (chunked)

    def complete(self, buf: bytearray) -> bool:
        """True once `buf` holds the whole request, or enough to know that it is refused."""
        if self.head_end is None:
            found = buf.find(b"\r\n\r\n", max(0, self.scanned - 3))
            if found < 0:
                self.scanned = len(buf)
                self.partial = len(buf) > self.max_head  # too long: the parser answers 431/400
                return self.partial
            self.head_end = self.next_chunk = found + 4
            self._read_head(bytes(buf[:found]))
        if self.chunked and not self.hand_over_now:
            whole = self._chunks_complete(buf)  # malformed chunks set hand_over_now
            if not self.hand_over_now:
                if whole:
                    return True
                if len(buf) - self.head_end <= self.max_body:
                    return False
                self.hand_over_now = True  # past the cap: the app answers 413
        if self.hand_over_now:
            self.partial = True
            return True
        return len(buf) >= self.head_end + self.length

    def _read_head(self, head: bytes) -> None:
        length: int | None = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self.hand_over_now = True
            elif name == b"transfer-encoding":
                self.chunked = self.chunked or b"chunked" in value.lower()
            elif name == b"expect":
                self.expects_continue = value.strip().lower() == b"100-continue"
        if length is not None and (self.chunked or length < 0 or length > self.max_body):
            # Both framings, a negative length (the parser answers 400), or a body the app
            # refuses (413) from its Content-Length without reading it.
            self.hand_over_now = True
        self.length = length or 0

    def _chunks_complete(self, buf: bytearray) -> bool:
        while True:
            pos = self.next_chunk
            if pos > len(buf):
                return False  # inside a chunk's data
            line_end = buf.find(b"\r\n", pos, pos + self.MAX_CHUNK_LINE)
            if line_end < 0:
                if len(buf) - pos >= self.MAX_CHUNK_LINE:
                    self.hand_over_now = True
                return self.hand_over_now
            try:
                size = int(bytes(buf[pos:line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            if size < 0 or size > self.max_body:  # malformed, or more than a body may be: refused by the parser
                self.hand_over_now = True
                return True
            if size == 0:  # the last chunk; then trailers, if any, and an empty line
                if buf[line_end + 2:line_end + 4] == b"\r\n":
                    return True
                return (buf.find(b"\r\n\r\n", line_end) >= 0
                        or len(buf) - line_end > self.MAX_TRAILERS)
            self.next_chunk = line_end + 2 + size + 2


class OneSendResponse(gunicorn_wsgi.Response):  # type: ignore[misc]
    """gunicorn's HTTP/1 response, which sends its head and its body in two writes. An answer
    whose whole body comes in one piece of its Content-Length (a JSON answer: Flask gives one
    bytes object) goes out in one send: one system call, during which the thread lets go of the
    GIL, instead of two. The bytes on the wire are the same."""

    headers_sent: bool
    ONE_SEND_MAX = 64 * 1024  # a larger body goes as gunicorn sends it (no copy of it behind the head)

    def write(self, arg: bytes) -> None:
        if (self.headers_sent or self.chunked or self._omits_body or type(arg) is not bytes
                or self.response_length != len(arg) or len(arg) > self.ONE_SEND_MAX):
            super().write(arg)
            return
        head = self.default_headers()
        head.extend(f"{k}: {v}\r\n" for k, v in self.headers)
        head.append("\r\n")
        self.headers_sent = True
        self.sent = len(arg)
        gunicorn_util.write(self.sock, "".join(head).encode("latin-1") + arg)


_gunicorn_http_date = gunicorn_util.http_date
_date: tuple[int, str] = (-1, "")


def http_date(timestamp: float | None = None) -> str:
    """gunicorn's Date header value, formatted once a second instead of per answer (the value
    has whole seconds: email.utils.formatdate drops the fraction). An explicit timestamp is
    formatted as gunicorn formats it."""
    global _date
    if timestamp is not None:
        return str(_gunicorn_http_date(timestamp))
    now = int(time.time())
    cached = _date  # one tuple, read and replaced whole: safe across threads
    if cached[0] != now:
        cached = _date = (now, str(_gunicorn_http_date(now)))
    return cached[1]


# gunicorn's Response.default_headers calls util.http_date() for every answer.
gunicorn_util.http_date = http_date

# gthread's handle_request builds its response with wsgi.create(), which takes this name's class
# (HTTP/2 passes its own).
gunicorn_wsgi.Response = OneSendResponse


class SettledConfig:
    """gunicorn's Config as a worker reads it: each setting looked up once, then kept.

    Config answers every attribute through `__getattr__` (a dict lookup and the setting's `get()`,
    some of them properties that build a new value each time), and the request path asks ~20 of
    them per request (the parser's limits and header policy, the environ, the response): 2 % of
    the API process's GIL time under autosave load. A worker's settings do not change after its
    fork (a reload starts new workers with a new Config), so each value is kept on first use."""

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._cfg, name)
        setattr(self, name, value)  # the next lookup finds it in this object's own dict
        return value


_peer_is_trusted_proxy = gunicorn_message.HeaderPolicy._peer_is_trusted_proxy
_trusted_peers: dict[tuple[Any, str], bool] = {}


def peer_is_trusted_proxy(self: Any) -> bool:
    """gunicorn's check (is the peer in forwarded_allow_ips?), which parses the peer's address and
    walks the allowed networks at every request, answered once per (config, address): the
    settings do not change in a worker, and a client's address is the same at every request."""
    peer = self.peer_addr
    if not isinstance(peer, tuple):
        return True
    key = (self.cfg, peer[0])
    known = _trusted_peers.get(key)
    if known is None:
        known = bool(_peer_is_trusted_proxy(self))
        if len(_trusted_peers) > 10_000:
            _trusted_peers.clear()
        _trusted_peers[key] = known
    return known


gunicorn_message.HeaderPolicy._peer_is_trusted_proxy = peer_is_trusted_proxy


class HandOffPool:
    """The worker's threads, each taking the next (function, argument) from one queue.

    gthread's ThreadPoolExecutor makes a Future per request, and gunicorn's loop then takes the
    Future's lock twice (cancelled(), result()) in a done-callback: under autosave load the
    hand-over both ways was a tenth of the API process's GIL time. A request needs neither: the
    thread that served it tells the event loop itself (GuardedThreadWorker._serve). What gunicorn
    calls on its pool (submit for TLS connections, shutdown) keeps ThreadPoolExecutor's meaning:
    what is queued still runs after shutdown(wait=False); the threads end after it, and the
    process's exit waits for them, for at most `grace_s`."""

    def __init__(self, threads: int, name: str = "front", grace_s: float = 30.0) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, threads))]
        # When the worker exits (a reload, max_requests, its parent gone), the requests being
        # served and those queued are answered, as ThreadPoolExecutor's threads did, but for at
        # most `grace_s` (gunicorn's graceful_timeout): a stream or a WebSocket that a client
        # keeps open must not keep a worker whose arbiter is gone alive for ever. Daemon threads,
        # joined against one deadline when the interpreter exits (before it would cut them off).
        self._grace_s = grace_s
        threading._register_atexit(self._end_all)  # type: ignore[attr-defined]
        for t in self._threads:
            t.start()

    def _end_all(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + self._grace_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - the thread must keep serving; handle() logs its own
                pass
            del item, fn, args

    def put(self, fn: Any, *args: Any) -> None:
        self._queue.put((fn, args))

    def submit(self, fn: Any, *args: Any) -> Any:
        """As ThreadPoolExecutor.submit (gunicorn's TLS path, which waits for the Future)."""
        from concurrent.futures import Future

        fut: Future[Any] = Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - given to whoever waits on the Future
                fut.set_exception(exc)

        self._queue.put((run, ()))
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()


class ModeKeepingSocket(socket.socket):
    """A client socket whose `setblocking(True)` does nothing when it is blocking already.

    gthread's `handle` calls `setblocking(True)` at every request (for a socket it set
    non-blocking for its own keep-alive poller); the front never switches modes (it reads with
    MSG_DONTWAIT), so the call was one ioctl per request for nothing, during which the thread let
    go of the GIL and then waited to take it back among the others. Python itself sets the file's
    O_NONBLOCK flag only from its timeout (no timeout: blocking), and nothing here sets the flag
    behind its back (linger()'s copy sets it on a socket whose original is closed), so
    `gettimeout() is None` says the socket is blocking. Every other call
    (non-blocking, a timeout) goes to the socket as before."""

    __slots__ = ()

    def setblocking(self, flag: bool) -> None:
        if flag and self.gettimeout() is None:
            return
        super().setblocking(flag)


class FrontConn(TConn):  # type: ignore[misc]
    """A connection, with what the front read of it and the per-address bookkeeping."""

    def __init__(self, worker: GuardedThreadWorker, cfg: Any, sock: socket.socket, client: Any,
                 server: Any, address: str) -> None:
        # Always a plain socket here (TLS wraps it later, in TConn.init: the ssl module detaches
        # it into an SSLSocket, not this class, so a TLS connection's modes stay the ssl module's).
        if type(sock) is socket.socket:
            sock.__class__ = ModeKeepingSocket
        super().__init__(cfg, sock, client, server)
        self.worker, self.address = worker, address
        self.buf = bytearray()
        self.deadline = 0.0
        self.idle = False  # kept alive, no byte of its next request yet: the keep-alive timeout runs
        self.reader: RequestReader | None = None
        self._closed = False

    def init(self) -> None:
        """In the thread: the parser gets the bytes the front read before it reads the socket."""
        super().init()
        if self.buf:
            self.parser.unreader.unread(bytes(self.buf))
            self.buf = bytearray()

    def close(self, graceful: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self.worker.forget_address(self.address)
        if graceful:
            self.worker.linger(self.sock)
        else:
            try:
                self.sock.close()
            except OSError:
                pass


class ParkedRequest:
    """A request whose answer waits (web/parking.py), while no thread holds it: what the
    application answered (the placeholder), what gunicorn needs to write the final answer, and
    the wait's state. `state`: "parked" (nothing runs for it), "stepping" (a thread runs a step;
    `again`: woken meanwhile, step once more) or "done"."""

    def __init__(self, parked: parking.Parked, resp: Any, environ: dict[str, Any], status: str,
                 headers: list[tuple[str, str]], body: bytes, pending: list[Any] | None, started: datetime) -> None:
        self.parked, self.resp, self.environ = parked, resp, environ
        self.status, self.headers, self.body = status, headers, body
        self.pending, self.started = pending, started
        self.conn: FrontConn | None = None
        self.state = "parked"
        self.again = False
        self.lock = threading.Lock()


class _Park(BaseException):  # noqa: N818 - not an error: unwinds gunicorn's handle() to _serve
    """Raised by the WSGI wrapper once an application parked its answer: gunicorn's
    handle_request and handle() let it through (they catch Exception), _serve parks."""

    def __init__(self, request: ParkedRequest) -> None:
        super().__init__()
        self.request = request


def _nothing() -> None:
    pass


def _no_write(_data: bytes) -> None:
    raise RuntimeError("a parked answer has no write(): return its body")


class GuardedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """See the module docstring. `limits` is set by livecode.server.serve before the fork."""

    limits = FrontLimits()
    cfg: Any  # gunicorn's Config; a SettledConfig once the worker runs (init_process)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[FrontConn, None] = {}  # connections whose request is being read
        self.lingering: dict[socket.socket, float] = {}
        self.per_address: dict[str, int] = {}
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in self.limits.exempt]
        self.exempt_cache: dict[str, bool] = {}
        # Read once: gunicorn's Config looks every setting up through __getattr__, a cost paid
        # per request in the event loop (a quarter of its CPU under autosave load).
        self.tls = bool(self.cfg.is_ssl)
        cfg = self.cfg
        self.max_head = int(cfg.limit_request_line + 4 + cfg.limit_request_fields * (cfg.limit_request_field_size + 2))
        self.keepalive_s = float(cfg.keepalive)
        self._notified = self._parent_checked = self._swept = 0.0
        timeout = self.limits.send_timeout_s
        self.timeval = struct.pack("ll", int(timeout), int((timeout % 1) * 1_000_000))  # per socket
        self.after_local = threading.local()  # .pending: the thread's request's after-response work
        # Answers waiting without a thread (web/parking.py), by deadline: a heap, each entry popped
        # when its last step is due (or once it is answered), so it holds every one still waiting.
        self.parked_deadlines: list[tuple[float, int, ParkedRequest]] = []
        self.parked_lock = threading.Lock()
        self._parked_seq = 0
        self._stopping_since: float | None = None

    def init_process(self) -> None:
        self.cfg = SettledConfig(self.cfg)  # after the fork: this worker's settings, fixed
        super().init_process()

    def get_thread_pool(self) -> Any:
        return HandOffPool(self.cfg.threads, grace_s=self.cfg.graceful_timeout)

    # ---- accepting -------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # should not happen (see serve()); never exit for it
                self.log.warning("out of file descriptors; a connection waits")
                return
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        address = client[0] if isinstance(client, tuple) else ""
        cap = self.limits.connections_per_address
        if cap and self.per_address.get(address, 0) >= cap and not self._exempt(address):
            self._refuse(sock, TOO_MANY_CONNECTIONS)
            return
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.nr_conns += 1
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.timeval)
        except OSError:  # e.g. a UNIX socket on a platform without them
            pass
        conn = FrontConn(self, self.cfg, sock, client, listener.getsockname(), address)
        self._start_reading(conn)

    def _exempt(self, address: str) -> bool:
        """Whether `address` is in LIVECODE_CONNECTION_LIMIT_EXEMPT (addresses or networks)."""
        if not self.exempt:
            return False
        known = self.exempt_cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            known = any(ip in net for net in self.exempt)
            if len(self.exempt_cache) > 10_000:
                self.exempt_cache.clear()
            self.exempt_cache[address] = known
        return known

    def forget_address(self, address: str) -> None:
        left = self.per_address.get(address, 0) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)

    def _refuse(self, sock: socket.socket, response: bytes) -> None:
        # Closed at once, not lingered: refused connections must not pile up as open sockets.
        try:
            sock.setblocking(False)
            sock.send(response)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    # ---- the front: read a whole request without a thread ---------------------------------

    def enqueue_req(self, conn: FrontConn) -> None:
        """gunicorn calls this for a new request on a connection (kept-alive, or pipelined bytes
        left in its parser): it goes to the front first, which hands it to a thread once read."""
        self._start_reading(conn)

    def _start_reading(self, conn: FrontConn, kept_alive: bool = False) -> None:
        """Read `conn`'s next request in the event loop. `kept_alive`: straight from its last
        answer (the keep-alive timeout runs until its first byte, then the header timeout)."""
        if self.tls:  # the front reads plain HTTP; TLS belongs to the proxy in front
            conn.data_ready = False
            super().enqueue_req(conn)
            return
        # The socket stays in whatever mode the thread left it (blocking): the front's own reads
        # and writes say MSG_DONTWAIT instead, which saves two mode switches (ioctl) per request.
        if conn.parser is not None:  # bytes of the next request that gunicorn already read
            conn.buf[:0] = conn.parser.unreader.take_buffered()
        conn.reader = RequestReader(self.max_head, self.limits.max_body_bytes)
        conn.idle = kept_alive and not conn.buf
        conn.deadline = time.monotonic() + (self.keepalive_s if conn.idle else self.limits.header_timeout_s)
        self.reading[conn] = None
        if conn.buf and self._complete(conn):
            self._hand_over(conn)
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: FrontConn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed its side
            if conn.reader is not None and conn.reader.head_end is not None:
                # A request whose body was cut short: the parser answers it (400), as it would
                # without the front; the client may still be reading.
                self.poller.unregister(conn.sock)
                self._hand_over(conn)
                return
            self._drop(conn)
            return
        if conn.idle:  # the first byte of a kept-alive connection's next request
            conn.idle = False
            conn.deadline = time.monotonic() + self.limits.header_timeout_s
        conn.buf += data
        if self._complete(conn):
            self.poller.unregister(conn.sock)
            self._hand_over(conn)

    def _complete(self, conn: FrontConn) -> bool:
        """True once the whole request is here (or enough to know the parser refuses it)."""
        reader = conn.reader
        assert reader is not None
        head_was_done = reader.head_end is not None
        if reader.complete(conn.buf):
            return True
        if reader.head_end is not None and not head_was_done:
            conn.deadline = time.monotonic() + self.limits.body_timeout_s
            if reader.expects_continue:  # the client waits for this before it sends the body
                try:
                    conn.sock.send(CONTINUE, socket.MSG_DONTWAIT)
                except OSError:
                    pass
        return False

    def _hand_over(self, conn: FrontConn) -> None:
        del self.reading[conn]
        conn.data_ready = True  # gthread must not wait for more data: it is all read already
        self.tpool.put(self._serve, conn)

    def _serve(self, conn: FrontConn) -> None:
        """In a thread: the request, then its connection back to the front.

        A kept-alive connection is put back by this thread itself: in `reading`, then on the
        poller (epoll takes a registration while the loop waits in it; the loop is woken by the
        next request's bytes, not by this). Passing it through gunicorn's method queue instead
        costs a pipe write, a wake-up of the loop and a pipe read per request. What the loop
        alone changes (nr_conns, closing) still goes through the queue."""
        try:
            keep = self.handle(conn)
        except _Park as parked:
            self._park(conn, parked.request)
            return
        except BaseException:  # noqa: BLE001 - handle() answers and logs what it can
            keep = False
        self._after_answer(conn, keep)

    def _after_answer(self, conn: FrontConn, keep: object) -> None:
        """In the thread that wrote `conn`'s answer: kept alive, the front reads its next request;
        otherwise the loop closes it."""
        if keep is True and self.alive:
            try:
                self._start_reading(conn, kept_alive=True)
                return
            except Exception:  # noqa: BLE001 - e.g. the loop closed it meanwhile (stopping)
                if self.reading.pop(conn, _MISSING) is _MISSING:
                    return  # the loop dropped it (and counted it)
                keep = None
        self.method_queue.defer(self._served, conn, keep)

    def _served(self, conn: FrontConn, keep: object) -> None:
        """In the event loop, once `conn`'s answer is written and the thread did not put it back
        itself (stopping, or it is to be closed): kept alive, the front reads its next request
        (gthread would first wait for it in its own keep-alive list, then hand it to the front:
        one more registration and wake-up per request); otherwise closed."""
        try:
            if keep is True:
                self._start_reading(conn, kept_alive=True)
                return
        except Exception:  # noqa: BLE001 - as gthread's finish_request: the connection is closed
            keep = None
        if keep is None:  # broken, not answered
            self.reading.pop(conn, None)
            self.nr_conns -= 1
            conn.close()
            return
        self.nr_conns -= 1
        conn.close(graceful=True)

    def _drop(self, conn: FrontConn, response: bytes | None = None) -> None:
        if self.reading.pop(conn, _MISSING) is _MISSING:
            return  # a thread took it back first (see _serve)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if response is not None:
            try:
                conn.sock.send(response, socket.MSG_DONTWAIT)
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close(graceful=response is not None)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = getattr(self, "wsgi")  # noqa: B009 - set by gunicorn's load_wsgi, untyped
        local = self.after_local

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            # What the request leaves for after its answer (web/after_response.py). A list left
            # by a request that handle_request did not end (HTTP/2) is run first, not dropped.
            left = getattr(local, "pending", None)
            if left:
                local.pending = None
                after_response.run(left)
            environ[after_response.ENVIRON_KEY] = local.pending = []
            resp = getattr(start_response, "__self__", None)
            # Only a POST waits (the execute routes); parked: HTTP/1 on a connection the front reads.
            if environ["REQUEST_METHOD"] != "POST" or self.tls or type(resp) is not OneSendResponse:
                return app(environ, start_response)
            environ[parking.CAN_PARK_KEY] = True
            started = datetime.now()
            held: list[Any] = []

            def hold_or_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                parked = environ.get(parking.PARKED_KEY)
                if parked is not None and exc_info is None and status.startswith(f"{parked.placeholder_status} "):
                    held[:] = [status, headers]
                    return _no_write
                if parked is not None:  # the answer is not the placeholder (an error after the park)
                    del environ[parking.PARKED_KEY]
                    parked.release()
                return start_response(status, headers, exc_info)

            try:
                result = app(environ, hold_or_start)
            except BaseException:
                parked = environ.pop(parking.PARKED_KEY, None)
                if parked is not None:
                    parked.release()
                raise
            parked = environ.get(parking.PARKED_KEY)
            if parked is None:
                return result
            if not held:  # no answer started (Flask always starts one): not parked
                del environ[parking.PARKED_KEY]
                parked.release()
                return result
            try:
                body = b"".join(result)
            except BaseException:
                del environ[parking.PARKED_KEY]
                parked.release()
                raise
            finally:
                if hasattr(result, "close"):
                    result.close()
            pending, local.pending = local.pending, None  # runs after the final answer
            raise _Park(ParkedRequest(parked, resp, environ, held[0], held[1], body, pending, started))

        self.wsgi = wsgi

    # ---- parked answers (web/parking.py) ---------------------------------------------------

    def _park(self, conn: FrontConn, pr: ParkedRequest) -> None:
        """In the thread that served the request: it waits from now on without one."""
        pr.conn = conn
        with self.parked_lock:
            self._parked_seq += 1
            heapq.heappush(self.parked_deadlines, (pr.parked.deadline, self._parked_seq, pr))
            soonest = self.parked_deadlines[0][2] is pr
        if soonest:  # the loop may sleep past it: woken to shorten its wait (a pipe write)
            self.method_queue.defer(_nothing)
        try:
            pr.parked.arm(partial(self._wake, pr, True))
        except Exception:  # noqa: BLE001 - then only its deadline ends it
            self.log.exception("arming a parked answer failed")

    def _wake(self, pr: ParkedRequest, woke: bool) -> None:
        """From any thread (the wait's notifier, the loop's sweep): a step on a server thread."""
        with pr.lock:
            if pr.state == "stepping":
                pr.again = True
                return
            if pr.state != "parked":
                return
            pr.state = "stepping"
        self.tpool.put(self._step, pr, woke)

    def _step(self, pr: ParkedRequest, woke: bool) -> None:
        while True:
            try:
                outcome = pr.parked.step(woke)
            except Exception:  # noqa: BLE001 - answered with what the application returned
                self.log.exception("a parked answer's step failed")
                outcome = parking.PLACEHOLDER
            if outcome is None and not woke:
                outcome = parking.PLACEHOLDER
            if outcome is not None:
                break
            with pr.lock:
                last = time.monotonic() >= min(pr.parked.deadline, self._parked_cutoff())
                if pr.again or last:
                    pr.again = False
                    woke = not last
                    continue
                pr.state = "parked"
                return
        with pr.lock:
            pr.state = "done"
        self._answer_parked(pr, outcome)

    def _answer_parked(self, pr: ParkedRequest, outcome: Any) -> None:
        conn, resp, environ = pr.conn, pr.resp, pr.environ
        assert conn is not None
        keep: object = None
        try:
            if outcome is parking.PLACEHOLDER:
                status, headers, body = pr.status, pr.headers, pr.body
            else:
                code, body, extra = outcome
                status = f"{code} {HTTPStatus(code).phrase}"
                # The placeholder's headers from the app's hooks (request id, security headers)
                # stay; what belonged to the placeholder alone goes (its length, a Retry-After).
                replaced = {"content-length", "retry-after", *(k.lower() for k in extra)}
                headers = [(k, v) for k, v in pr.headers if k.lower() not in replaced]
                headers += [*extra.items(), ("Content-Length", str(len(body)))]
            environ[parking.ANSWERED_KEY] = (int(status.split(" ", 1)[0]), time.perf_counter())
            if not self.alive:
                resp.force_close()
            try:
                resp.start_response(status, headers)
                resp.write(body)
                resp.close()
            finally:
                self.log.access(resp, resp.req, environ, datetime.now() - pr.started)
            keep = self._keepalive_after(conn, not resp.should_close())
        except OSError as exc:  # the client is gone (or stopped reading): closed
            self.log.debug("a parked answer was not delivered: %r", exc)
        except Exception:  # noqa: BLE001 - closed without an answer, and said
            self.log.exception("a parked answer failed")
        finally:
            try:
                pr.parked.release()
            finally:
                pending, pr.pending = pr.pending, None
                # What the heap entry keeps until its deadline is only this small object.
                pr.environ, pr.resp, pr.body, pr.headers = {}, None, b"", []
                if pending:
                    after_response.run(pending)
        self._after_answer(conn, keep)

    def _sweep_parked(self, now: float) -> None:
        """In the loop: a last step for the parked answers past their deadline (all of them once
        a stopping worker is out of time: `_parked_cutoff`)."""
        with self.parked_lock:
            heap = self.parked_deadlines
            due = []
            cutoff = self._parked_cutoff()
            while heap and (heap[0][0] <= now or heap[0][2].state == "done" or cutoff <= now):
                due.append(heapq.heappop(heap)[2])
        for pr in due:
            self._wake(pr, False)

    def _parked_cutoff(self) -> float:
        """When the parked waits must end: never while the worker runs. Once it stops they go on
        waiting for their runs (as a request in a thread would during the graceful stop) until
        a second before gunicorn's graceful timeout, when each takes its last step (200 if its
        run has ended, else what the route answers at its deadline)."""
        if self.alive:
            return float("inf")
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        return self._stopping_since + max(0.0, float(self.cfg.graceful_timeout) - 1.0)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """gthread's loop waits up to a second for events; with answers parked, no longer than
        the nearest deadline, whose last step is handed to a thread here."""
        if self.parked_deadlines:
            now = time.monotonic()
            self._sweep_parked(now)  # also drops the answered ones from the heap's top
            with self.parked_lock:
                if self.parked_deadlines:
                    soonest = min(self.parked_deadlines[0][0], self._parked_cutoff())
                    timeout = min(timeout, max(0.0, soonest - now))
        super().wait_for_and_dispatch_events(timeout)

    def _keepalive_after(self, conn: FrontConn, keepalive: bool) -> bool:
        """gthread drains what the app left unread of the body before the connection is reused,
        bounding each read by setting the socket's timeout and setting it back after (and its
        parser drains again before the next request, setting the timeout back once more): three
        mode switches (ioctl) per request. A request the front read whole (not `partial`) is all
        in the parser's buffer already: its drain reads no socket and needs no timeout. Once it is
        drained the parser forgets it, so that the next request's parse has nothing to drain."""
        if not (keepalive and conn.reader is not None and not conn.reader.partial and not conn.is_http2):
            return bool(super()._keepalive_after(conn, keepalive))
        parser = conn.parser
        body = getattr(parser.mesg, "body", None)
        if body is not None:
            if getattr(body, "failed", False) is True:  # where the next request starts is unknown
                return False
            while body.read(RECV_BYTES):
                pass
        parser.mesg = None
        return True

    def notify(self) -> None:
        """gthread touches the arbiter's liveness file at every turn of its loop (once or more
        per request under load); the arbiter only needs it within `timeout` (60 s)."""
        now = time.monotonic()
        if now - self._notified >= HEARTBEAT_S:
            self._notified = now
            super().notify()

    def is_parent_alive(self) -> bool:
        """Asked at every turn of the loop too (a getppid each); once a second is as good."""
        now = time.monotonic()
        if now - self._parent_checked < HEARTBEAT_S:
            return True
        self._parent_checked = now
        if super().is_parent_alive():
            return True
        self.alive = False  # gthread only leaves its loop: what waits (parked answers) must see it
        return False

    def handle_request(self, req: Any, conn: FrontConn) -> bool:
        if conn.reader is not None and conn.reader.partial:
            req.must_close = True  # the answer says "Connection: close"; the linger drains the rest
        elif len(self.reading) >= self.max_keepalived:
            # gthread's bound on kept-alive connections (worker_connections - threads), which it
            # counts in its own keep-alive list: here they wait in the front.
            req.must_close = True
        try:
            return bool(super().handle_request(req, conn))
        except (BlockingIOError, TimeoutError):
            # SO_SNDTIMEO ran out: the client stopped reading. The response was closed already.
            self.log.info("dropped a client that stopped reading (send timeout) from %s", conn.address)
            return False
        finally:
            # The answer is written (or the client is gone): the work the request left for now.
            pending = getattr(self.after_local, "pending", None)
            self.after_local.pending = None
            if pending:
                after_response.run(pending)

    # ---- deadlines and lingering closes (run by gunicorn's loop after every turn) ----------

    def murder_pending(self) -> None:
        """Close what ran out of time: requests not read within their deadline, lingering closes.
        gunicorn calls this after every turn of its loop, i.e. about once per request under load,
        and each sweep walks every connection the front reads (all the idle kept-alive ones): at
        most once per SWEEP_S instead (the deadlines are seconds long), at every turn once the
        worker is stopping."""
        now = time.monotonic()
        if self.alive and now - self._swept < SWEEP_S:
            return
        self._swept = now
        super().murder_pending()
        # A stopping worker does not wait for requests that have not started.
        expired = [c for c in list(self.reading) if c.deadline <= now or (not self.alive and not c.buf)]
        for conn in expired:
            # A connection that never sent a byte is just closed; one that started a request
            # is told why.
            self._drop(conn, REQUEST_TIMEOUT if conn.buf else None)
        for sock in [s for s, until in self.lingering.items() if until <= now]:
            self._end_linger(sock)

    def linger(self, sock: socket.socket) -> None:
        """Half-close and drain until the client closes too (or LINGER_S), in the event loop:
        closing with unread bytes would reset the connection and could cut off the answer. At
        most `connections_per_process` sockets linger; past that they are closed at once."""
        if len(self.lingering) >= self.limits.connections_per_process:
            try:
                sock.close()
            except OSError:
                pass
            return
        try:
            # The linger's own descriptor: the socket object may still be closed under it by
            # whoever had it (a WebSocket's reader thread). That would free the fd number the
            # selector holds, and the next accepted connection, given that number, would collide
            # with the dead entry and be reset.
            own = sock.dup()
        except OSError:
            own = None
        try:
            sock.close()
        except OSError:
            pass
        if own is None:
            return
        sock = own
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self._on_linger_readable)
        except (OSError, ValueError, KeyError):
            try:
                sock.close()
            except OSError:
                pass
            return
        self.lingering[sock] = time.monotonic() + LINGER_S

    def _on_linger_readable(self, sock: socket.socket) -> None:
        try:
            if sock.recv(RECV_BYTES):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            sock.close()
        except OSError:
            pass
