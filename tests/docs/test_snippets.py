"""Every ```python block in docs/*.md and README.md runs as written.

The blocks of one file run in order in one fresh namespace, in a fresh interpreter whose
working directory is an empty temporary folder. A block that is deliberately not runnable
must be fenced as ```text, ```console or ```bash instead.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
TIMEOUT_S = 600

# Runs [(line, source), ...] from argv[2] as blocks of the file argv[1], compiled so that
# tracebacks show the file's own line numbers; on an exception prints the traceback, then
# "<file>: block at line <n> failed", and exits 1.
RUNNER = """
import json, sys, traceback
path, blocks = sys.argv[1], json.loads(sys.argv[2])
namespace = {"__name__": "__main__"}
for line, source in blocks:
    try:
        exec(compile("\\n" * line + source, path, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"{path}: block at line {line} failed", file=sys.stderr)
        sys.exit(1)
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, source)`` for each block fenced ```python; ``line`` is the fence's (1-based)."""
    blocks, fence, language, lines = [], None, "", []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence, language, lines = number, (stripped[3:].split() or [""])[0], []
        elif stripped == "```":
            if language == "python":
                blocks.append((fence, textwrap.dedent("\n".join(lines)) + "\n"))
            fence = None
        else:
            lines.append(line)
    return blocks


def test_python_blocks_are_found_and_other_fences_skipped():
    text = ("x\n```python\na = 1\n```\n```text\nnot python\n```\n"
            "- item\n  ```python\n  b = a\n  ```\n")
    assert python_blocks(text) == [(2, "a = 1\n"), (9, "b = a\n")]


def run_blocks(path: pathlib.Path, blocks: list[tuple[int, str]],
               cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """Run ``blocks`` of ``path`` with :data:`RUNNER` in a fresh interpreter in ``cwd``."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run([sys.executable, "-c", RUNNER, str(path), json.dumps(blocks)],
                          check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def test_a_failing_block_is_named_by_file_and_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```python\nvalue = 1\n```\ntext\n```python\nvalue + missing\n```\n")
    result = run_blocks(doc, python_blocks(doc.read_text()), tmp_path)
    assert result.returncode == 1
    assert f"{doc}: block at line 5 failed" in result.stderr
    assert f'File "{doc}", line 6' in result.stderr and "NameError" in result.stderr


DOCS = [path for path in FILES if python_blocks(path.read_text())]


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_snippets_run(path, tmp_path):
    result = run_blocks(path, python_blocks(path.read_text()), tmp_path)
    if result.returncode != 0:
        pytest.fail(result.stderr[-6000:], pytrace=False)
