"""One HTTP try of a webhook, with the standard library only: the host is resolved here, each
address is checked (urls.address_refusal), the socket connects to a checked address and the
address it is actually connected to is checked again; TLS verifies the certificate for the URL's
host name. A redirect is an answer like any other (never followed); only a 2xx is a success."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .urls import RefusedUrl, Resolver, Target, address_refusal, parse_url, system_resolver

MAX_ANSWER_BYTES = 64 * 1024  # read (and discarded) from an answer, so the connection ends cleanly


@dataclass(frozen=True)
class TryResult:
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int
    retry: bool = True  # False: trying again cannot help (a refused address)


def _connect(target: Target, allow: tuple[str, ...], timeout: float, resolve: Resolver) -> socket.socket:
    try:
        addresses = resolve(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise ConnectionError(f"could not resolve {target.host}: {exc}") from None
    refusals = []
    last: OSError | None = None
    for address in addresses:
        why = address_refusal(address, target.host, allow)
        if why:
            refusals.append(why)
            continue
        try:
            sock = socket.create_connection((address, target.port), timeout=timeout)
        except OSError as exc:
            last = exc
            continue
        peer = str(sock.getpeername()[0])
        why = address_refusal(peer, target.host, allow)  # the address actually connected
        if why:
            sock.close()
            refusals.append(why)
            continue
        return sock
    if refusals and last is None:
        raise RefusedUrl(refusals[0])
    raise ConnectionError(f"could not connect to {target.host}:{target.port}: {last or 'no address'}")


def send(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    method: str = "POST",
    allow: Iterable[str] = (),
    timeout: float = 5.0,
    resolve: Resolver = system_resolver,
) -> TryResult:
    """One try: POST (or PUT) `body` to `url`. Never raises for a network or HTTP failure."""
    started = time.monotonic()

    def result(ok: bool, status: int | None, error: str | None, retry: bool = True) -> TryResult:
        return TryResult(ok, status, error, int((time.monotonic() - started) * 1000), retry)

    try:
        target = parse_url(url)
        sock = _connect(target, tuple(allow), timeout, resolve)
    except RefusedUrl as exc:
        return result(False, None, f"refused: {exc}", retry=False)
    except (ConnectionError, OSError) as exc:
        return result(False, None, str(exc)[:300])
    conn: http.client.HTTPConnection
    try:
        sock.settimeout(timeout)
        if target.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
            conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        conn.sock = sock  # already connected to the vetted address: request() does not connect again
        # One deadline for the whole try: a receiver trickling its answer a byte at a time would
        # otherwise hold this sender thread for as long as it likes (each read has its timeout).
        deadline = threading.Timer(timeout + 5, _shut, (sock,))  # within the lease (3 x timeout + 5)
        deadline.daemon = True
        deadline.start()
        try:
            conn.request(method, target.path, body=body, headers={**headers, "Content-Length": str(len(body))})
            response = conn.getresponse()
            status = response.status
            try:
                response.read(MAX_ANSWER_BYTES)
            except (OSError, http.client.HTTPException):
                pass  # the status line is the answer; a body cut off at the deadline changes nothing
        finally:
            deadline.cancel()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return result(False, None, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        try:
            sock.close()
        except OSError:
            pass
    if 200 <= status < 300:
        return result(True, status, None)
    if 300 <= status < 400:
        return result(False, status, "a redirect: not followed")
    return result(False, status, f"HTTP {status}")


def _shut(sock: socket.socket) -> None:
    """Ends a try past its deadline: the blocked read in the sender thread fails at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
