"""Work a request leaves for after its answer has been sent.

The front worker (web/front_worker.py) gives each request an empty list under ENVIRON_KEY and,
once the response has been written to the socket, runs what the request put on it, before the
connection goes back to the event loop for its next request. What goes there is what the client
need not wait for and no guarantee depends on: the access log line and the latency histogram,
the replies of Redis commands already sent whose failure is only logged. Under any other server
(Flask's test client, another WSGI server) there is no list and the work runs at once, inside the
request, as it would without this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

ENVIRON_KEY = "livecode.after_response"


def defer(environ: dict[str, Any], fn: Callable[[], object]) -> None:
    """Run `fn` once the response to the request of `environ` has been sent (or now)."""
    pending = environ.get(ENVIRON_KEY)
    if pending is None:
        run([fn])
    else:
        pending.append(fn)


def run(callbacks: Iterable[Callable[[], object]]) -> None:
    """Each callback in order; one that fails is logged and the next still runs."""
    for fn in callbacks:
        try:
            fn()
        except Exception:  # noqa: BLE001 - the answer is sent; nobody else would hear of it
            log.exception("work after the response failed")
