"""The template of entered warm starts (sandbox/enter_template.py) is a script the worker runs in
a sandbox, not a module: its functions are tried here one at a time, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import livecode.sandbox

TEMPLATE = Path(livecode.sandbox.__file__).parent / "enter_template.py"

# Runs the template's _as_main (and what it calls) with the globals it reads, in this interpreter.
HARNESS = r"""
import ast, json, os, sys
from importlib.machinery import FileFinder, SourceFileLoader, SOURCE_SUFFIXES
template, base = sys.argv[1], sys.argv[2]
tree = ast.parse(open(template).read())
fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("_as_main", "_imports_as_at_start")]
made, missing, kept = f"{base}/made", f"{base}/missing", f"{base}/kept"
finder = FileFinder(kept, (SourceFileLoader, SOURCE_SUFFIXES))
ns = {"sys": sys, "os": os, "__builtins__": __builtins__, "_AT_START": frozenset(sys.modules),
      "_SCRIPT": f"{base}/template/main.py",
      # As the template's start-up left them: its script's entry, a directory of sys.path that
      # did not exist then (None), one that still does not, one that had a finder.
      "_FINDERS_AT_START": {f"{base}/template/main.py": None, made: None, missing: None, kept: finder}}
exec(compile(ast.Module(fns, []), template, "exec"), ns)
os.mkdir(made)  # made since the template started
ns["_as_main"](f"{base}/work/main.py")
print(json.dumps([[key, type(value).__name__] for key, value in sys.path_importer_cache.items()]))
"""


def test_a_copy_looks_again_at_a_path_directory_made_since_its_template_started(tmp_path: Path) -> None:
    """A directory of sys.path missing when the template started (the import system cached None
    for it) and made since, say by a first `pip install`: a copy must look at it again, as a cold
    start would, instead of being told for the template's whole life that it is not there."""
    (tmp_path / "kept").mkdir()
    out = subprocess.run([sys.executable, "-E", "-s", "-c", HARNESS, str(TEMPLATE), str(tmp_path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    finders = dict(json.loads(out))
    assert finders == {
        f"{tmp_path}/work/main.py": "NoneType",  # the template's script's entry, under the program's path
        f"{tmp_path}/missing": "NoneType",  # still not there: as a cold start would have it
        f"{tmp_path}/kept": "FileFinder",
    }, finders
