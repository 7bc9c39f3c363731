"""Issue 6's streaming benchmark, against the distributed system (PostgreSQL, Redis, a worker,
and an API process started here with a chosen gunicorn thread count):

1. latency from a line printed by the program to its arrival at one SSE client (median, p95):
   the program prints time.time() every 50 ms; the sandbox shares the host's clock;
2. how many concurrent SSE clients one API process (1 gunicorn worker, T threads) holds with that
   delay under 100 ms: N clients follow one execution that prints a stamp every 100 ms; only lines
   printed after every client has caught up are counted. Clients are asyncio connections in this
   process (one thread), so the client side costs little of the 2 cores.

Run: .venv/bin/python -m bench.bench_stream [--levels 10,50,100,200,400] [--threads 32,256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.common import Stack, machine, summary
from tests.support.client import ApiClient
from tests.support.procs import Process, free_port, livecode, wait_api

STAMPER = """
import time
end = time.time() + {seconds}
while time.time() < end:
    print(repr(time.time()), flush=True)
    time.sleep({interval})
"""


class SseClient:
    """A minimal SSE reader over a raw socket: records, for each stamp line, arrival - stamp."""

    def __init__(self, url: str) -> None:
        self.url = urlsplit(url)
        self.samples: list[tuple[float, float]] = []  # (stamp, latency_s)
        self.status = 0
        self.caught_up = asyncio.Event()
        self.error: str | None = None

    async def run(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.url.hostname, self.url.port)
            writer.write(
                f"GET {self.url.path} HTTP/1.1\r\nHost: {self.url.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            await writer.drain()
            self.status = int((await reader.readline()).split()[1])
            if self.status != 200:  # 503 STREAMS_BUSY: the process has no thread to spare
                writer.close()
                return
            kind = ""
            while True:
                line = await reader.readline()
                if not line:
                    break
                now = time.time()
                if line.startswith(b"event:"):
                    kind = line[6:].strip().decode()
                    if kind == "end":
                        break
                elif line.startswith(b"data:") and kind == "output":
                    for stamp in json.loads(line[5:])["text"].split():
                        self.samples.append((float(stamp), now - float(stamp)))
                    if self.samples and now - self.samples[-1][0] < 0.5:
                        self.caught_up.set()  # replay is over: this line is fresh
            writer.close()
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            self.error = repr(exc)
        finally:
            self.caught_up.set()


def start_stream(api: ApiClient, seconds: float, interval: float) -> str:
    session = api.create_session(STAMPER.format(seconds=seconds, interval=interval))
    r = api.execute(session["session_id"], time_limit_ms=int((seconds + 10) * 1000))
    assert r.status_code == 202, r.text
    return str(r.json()["execution_id"])


def api_rss_mb(proc: Process) -> float:
    p = psutil.Process(proc.proc.pid)
    return round(sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 2**20, 1)


async def follow(api: ApiClient, eid: str, clients: int, seconds: float, settle: float = 1.0) -> dict[str, Any]:
    url = f"{api.base}/api/v1/executions/{eid}/events"
    readers = [SseClient(url) for _ in range(clients)]
    tasks = [asyncio.create_task(r.run()) for r in readers]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.caught_up.wait() for r in readers)), timeout=seconds)
        all_in = time.time() + settle
    except TimeoutError:
        all_in = None  # some clients never got a fresh line: the process is out of threads
    await asyncio.gather(*tasks)
    latencies = [lat * 1000 for r in readers for stamp, lat in r.samples if all_in and stamp >= all_in]
    if all_in is None:  # the ones that got in, from the time they all did
        latencies = [lat * 1000 for r in readers for stamp, lat in r.samples if lat < 1.0]
    report: dict[str, Any] = {
        "clients": clients,
        "connected": sum(r.status == 200 for r in readers),
        "refused_503": sum(r.status == 503 for r in readers),
        "errors": sorted({r.error for r in readers if r.error})[:3],
        "all_caught_up": all_in is not None,
    }
    if latencies:
        report["latency"] = summary(latencies)
    return report


def run_level(api: ApiClient, proc: Process, clients: int, seconds: float) -> dict[str, Any]:
    eid = start_stream(api, seconds, 0.1)
    result = asyncio.run(follow(api, eid, clients, seconds))
    result["api_rss_mb_after"] = api_rss_mb(proc)
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--levels", default="10,50,100,200,400")
    p.add_argument("--threads", default="32,256")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--latency-lines", type=int, default=200)
    args = p.parse_args()
    # Every client comes from this one address: the per-address caps are switched off.
    stack = Stack(workers=1, LIVECODE_LOG_LEVEL="WARNING", LIVECODE_STREAMS_PER_ADDRESS="0",
                  LIVECODE_CONNECTIONS_PER_ADDRESS="0")
    report: dict[str, Any] = {"machine": machine(), "single_client": None, "ramp": {}}
    try:
        for threads in [int(t) for t in args.threads.split(",")]:
            port = free_port()
            proc = Process(
                livecode(
                    "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", str(threads)
                ),
                stack.cluster.env,
                "bench-api",
            )
            base = f"http://127.0.0.1:{port}"
            wait_api(proc, base)
            api = ApiClient(base)
            try:
                if report["single_client"] is None:
                    seconds = args.latency_lines * 0.05
                    eid = start_stream(api, seconds, 0.05)
                    single = asyncio.run(follow(api, eid, 1, seconds + 10, settle=0.2))
                    report["single_client"] = single.get("latency")
                    print("single client:", json.dumps(single), flush=True)
                levels = []
                for n in [int(x) for x in args.levels.split(",")]:
                    level = run_level(api, proc, n, args.seconds)
                    print(f"threads={threads}:", json.dumps(level), flush=True)
                    levels.append(level)
                    ok = (
                        level.get("all_caught_up")
                        and not level["refused_503"]
                        and level.get("latency", {}).get("p95_ms", 1e9) < 100
                    )
                    if not ok:
                        break  # past the limit; bigger levels only take longer
                report["ramp"][f"threads={threads}"] = levels
            finally:
                proc.stop()
    finally:
        stack.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
