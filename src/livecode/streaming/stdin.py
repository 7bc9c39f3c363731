"""A run's input channel: what a WebSocket client types, and the signals a user sends (a Stop
button, Piston's `signal`), reach the running program.

The API process that takes them may not be the worker's process, so they travel through Redis: a
list `livecode:stdin:{id}` the API appends to and the worker's run pops from (without blocking:
the sandbox polls it every tick). In the embedded mode (no Redis) it is a queue in this process's
memory; the runtime builds one of the two (runtime.py). Either way the total a client may send
is the stdin limit (settings.max_stdin_bytes) and what nobody reads expires. An interactive run
polls from its start; any other run only polls for signals, from SIGNAL_FIRST_POLL_S on, so a
short run makes no round trip for it (a signal sent earlier waits in the list until then).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from ..errors import PayloadTooLarge
from ..sandbox import StdinSource

log = logging.getLogger(__name__)

KEY_TTL_S = 3600
POLL_INTERVAL_S = 0.05  # the sandbox asks on every loop turn; Redis is asked at most this often
SIGNAL_FIRST_POLL_S = 0.25  # a run that is not interactive is asked for signals from then on,
SIGNAL_POLL_S = 0.1  # this often
# List item tags: data follows the tag byte; EOF is the tag alone; a signal's number follows it.
_DATA, _EOF, _SIGNAL = b"d", b"e", b"s"


def _key(execution_id: str) -> str:
    return f"livecode:stdin:{execution_id}"


def _bytes_key(execution_id: str) -> str:
    return f"livecode:stdin:{execution_id}:bytes"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"interactive input is limited to {limit} bytes per execution",
                           code="STDIN_TOO_LARGE", details={"limit": limit})


@dataclass
class _Channel:
    items: deque[bytes] = field(default_factory=deque)
    total: int = 0
    touched: float = field(default_factory=time.monotonic)


class _MemoryStdin:
    """The embedded mode's channels, one per execution, bounded in count and age."""

    def __init__(self, max_channels: int = 1000) -> None:
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_channels

    def push(self, execution_id: str, item: bytes, size: int, limit: int) -> None:
        with self._lock:
            ch = self._channels.get(execution_id)
            if ch is None:
                ch = self._channels[execution_id] = _Channel()
            if ch.total + size > limit:
                raise _too_large(limit)
            ch.total += size
            ch.items.append(item)
            ch.touched = time.monotonic()
            self._channels.move_to_end(execution_id)
            now = time.monotonic()
            while self._channels and (
                len(self._channels) > self._max or now - next(iter(self._channels.values())).touched > KEY_TTL_S
            ):
                self._channels.popitem(last=False)

    def pop_all(self, execution_id: str) -> list[bytes]:
        with self._lock:
            ch = self._channels.get(execution_id)
            if ch is None:
                return []
            items = list(ch.items)
            ch.items.clear()
            return items

    def discard(self, execution_id: str) -> None:
        with self._lock:
            self._channels.pop(execution_id, None)


class StdinChannels:
    """The port: the API sends, the worker's sandbox reads. Both implementations share the byte
    accounting and the tags; they differ in where the items wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # settings.max_stdin_bytes: the most a client may send to one run

    def _push(self, execution_id: str, item: bytes, size: int) -> None:
        raise NotImplementedError

    def _pop(self, execution_id: str) -> list[bytes]:
        raise NotImplementedError

    def discard(self, execution_id: str) -> None:
        """Drop what is left for a run that has finished."""
        raise NotImplementedError

    def send(self, execution_id: str, data: str) -> None:
        """Queue `data` for the execution's program. PayloadTooLarge past the stdin limit."""
        raw = data.encode("utf-8")
        if raw:
            self._push(execution_id, _DATA + raw, len(raw))

    def close(self, execution_id: str) -> None:
        """End of input: the program's next read returns EOF once the queued input is consumed."""
        self._push(execution_id, _EOF, 0)

    def signal(self, execution_id: str, signum: int) -> None:
        """Queue a signal for the execution's program (delivered by the worker that runs it)."""
        self._push(execution_id, _SIGNAL + str(int(signum)).encode("ascii"), 0)

    def source(self, execution_id: str) -> StdinSource:
        """The stdin source for an interactive run (input only; signals are not read)."""
        return self.run_input(execution_id, interactive=True).stdin

    def run_input(self, execution_id: str, interactive: bool) -> RunInput:
        """What a run reads from the channel: its stdin (interactive runs) and its signals."""
        return RunInput(lambda: self._pop(execution_id), interactive)


class MemoryStdinChannels(StdinChannels):
    def __init__(self, limit: int, max_channels: int = 1000) -> None:
        super().__init__(limit)
        self._store = _MemoryStdin(max_channels)

    def _push(self, execution_id: str, item: bytes, size: int) -> None:
        self._store.push(execution_id, item, size, self.limit)

    def _pop(self, execution_id: str) -> list[bytes]:
        return self._store.pop_all(execution_id)

    def discard(self, execution_id: str) -> None:
        self._store.discard(execution_id)


class RedisStdinChannels(StdinChannels):
    def __init__(self, client: redis.Redis, limit: int) -> None:
        super().__init__(limit)
        self.client = client

    def _push(self, execution_id: str, item: bytes, size: int) -> None:
        key, counter = _key(execution_id), _bytes_key(execution_id)
        total = int(self.client.incrby(counter, size))  # type: ignore[arg-type]
        if total > self.limit:
            self.client.decrby(counter, size)
            raise _too_large(self.limit)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, item)
        pipe.expire(key, KEY_TTL_S)
        pipe.expire(counter, KEY_TTL_S)
        pipe.execute()

    def _pop(self, execution_id: str) -> list[bytes]:
        reply: Any = self.client.lpop(_key(execution_id), 64)
        return list(reply or [])

    def discard(self, execution_id: str) -> None:
        try:
            self.client.delete(_key(execution_id), _bytes_key(execution_id))
        except redis.RedisError:
            log.debug("could not delete stdin keys", exc_info=True)


class RunInput:
    """One run's side of the channel: `stdin` (the sandbox's StdinSource: the next input, None
    for nothing yet, b"" at EOF) and `signals` (its SignalSource). Neither blocks: the sandbox
    calls them from its output-reading loop, and one poll of the list serves both."""

    def __init__(self, pop: Callable[[], list[bytes]], interactive: bool) -> None:
        self._pop = pop
        self.interactive = interactive
        self._interval = POLL_INTERVAL_S if interactive else SIGNAL_POLL_S
        self.next_poll = 0.0 if interactive else time.monotonic() + SIGNAL_FIRST_POLL_S
        self.eof = False
        self._data = bytearray()
        self._signals: deque[int] = deque()
        self.received_signal = False  # the channel held something: discard it at the end

    def _poll(self) -> None:
        now = time.monotonic()
        if now < self.next_poll:
            return
        self.next_poll = now + self._interval
        try:
            items = self._pop()
        except redis.RedisError:
            log.debug("run input poll failed", exc_info=True)
            return
        for item in items:
            tag = item[:1]
            if tag == _SIGNAL:
                with contextlib.suppress(ValueError):
                    self._signals.append(int(item[1:]))
                    self.received_signal = True
            elif self.eof or not self.interactive:
                continue  # anything sent after EOF can never be read: dropped
            elif tag == _EOF:
                self.eof = True
            else:
                self._data += item[1:]

    def stdin(self) -> bytes | None:
        if not self._data and not self.eof:
            self._poll()
        if self._data:
            out = bytes(self._data)
            self._data.clear()
            return out  # EOF, if seen, is reported on the next call
        return b"" if self.eof else None

    def signals(self) -> int | None:
        if not self._signals:
            self._poll()
        return self._signals.popleft() if self._signals else None
