"""How well the Piston API's `run.output` keeps the order in which a program alternated its writes
to stdout and stderr (docs/compat.md). A Python program writes N lines alternately to each stream,
with a pause (none, 1 ms, 10 ms) after each write; the figure is how many lines of `output` stand
where they were written. Against a running LiveCode (`livecode serve`, or an API with workers).

Run: .venv/bin/python -m bench.bench_piston_output_order [--base http://127.0.0.1:5000] [--lines 200]
     [--key KEY]
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from typing import Any

PROGRAM = (
    "import os, time\nfor i in range({n}):\n"
    "    os.write(1, b'o%d\\n' % i); {pause}\n"
    "    os.write(2, b'e%d\\n' % i); {pause}\n"
)


def run(base: str, key: str | None, source: str) -> dict[str, Any]:
    body = json.dumps({"language": "python", "version": "*", "files": [{"content": source}]}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": key} if key else {})}
    req = urllib.request.Request(base + "/piston/api/v2/execute", body, headers)
    with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310 - the operator's own server
        return json.load(resp)["run"]  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="http://127.0.0.1:5000")
    parser.add_argument("--lines", type=int, default=200, help="writes to each stream")
    parser.add_argument("--key", help="an API key, when the server requires sign-in")
    args = parser.parse_args()
    expected = [line for i in range(args.lines) for line in (f"o{i}", f"e{i}")]
    for label, pause in (("no pause", "pass"), ("1 ms", "time.sleep(0.001)"), ("10 ms", "time.sleep(0.01)")):
        out = run(args.base, args.key, PROGRAM.format(n=args.lines, pause=pause))["output"].split("\n")[:-1]
        kept = sum(1 for got, want in zip(out, expected, strict=False) if got == want)
        print(f"pause {label:>8}: {kept}/{len(expected)} lines of output where they were written")


if __name__ == "__main__":
    main()
