"""The README's commands work as written, in order, from a fresh clone.

Every `sh` block runs, and every `$ ` line of a `console` block (a transcript) runs and must exit
as its transcript shows: 1 when it ends in an `Error:` line, else 0. `shell` blocks (commands for
a server, the development verbs) are for reading only. The clone is a copy of the tracked files
that shares this environment's `.venv`, as `make run` would have built it; `make test` itself is
not run again from inside the suite.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # left out of make test-fast

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NOT_FROM_THE_SUITE = re.compile(r"^make test\b")


def readme_script(readme: str) -> tuple[str, int]:
    """Return a bash script running the README's commands, and how many commands it runs."""
    lines = ["set -eo pipefail", "trap 'make serve-stop >/dev/null 2>&1 || true' EXIT"]
    count = 0
    for kind, body in _BLOCK.findall(readme):
        if kind == "sh":
            commands = [c for c in body.splitlines() if not _NOT_FROM_THE_SUITE.match(c)]
            lines += commands
            count += sum(1 for c in commands if c.strip() and not c.lstrip().startswith("#"))
        elif kind == "console":
            expected = 1 if re.search(r"^Error:", body, re.MULTILINE) else 0
            for command in (c[2:] for c in body.splitlines() if c.startswith("$ ")):
                quoted = shlex.quote(command)
                lines.append(
                    f"set +e; {command} >/dev/null 2>&1; code=$?; set -e; "
                    f'[ "$code" -eq {expected} ] || '
                    f'{{ echo "README: "{quoted}" exited $code, not {expected}" >&2; exit 1; }}'
                )
                count += 1
    return "\n".join(lines) + "\n", count


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """Copy the tracked files (keeping their times, so make sees the environment up to date)."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    target = tmp_path / "convsum"
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    venv = Path(sys.prefix)
    for stamp in venv.glob(".installed-*"):
        stamp.touch()  # newer than the copied pyproject.toml: make installs nothing
    (target / ".venv").symlink_to(venv)
    return target


def test_readme_script_counts_what_it_runs() -> None:
    script, count = readme_script(
        "```sh\nmake run\nmake test\n# a comment\n```\n"
        "```console\n$ convsum run x\nError: bad\n```\n```shell\nrm -rf /\n```\n"
    )
    assert count == 2
    assert "make run" in script and "make test" not in script and "rm -rf" not in script
    assert '[ "$code" -eq 1 ]' in script


def test_readme_commands_run_from_a_fresh_clone(clone: Path) -> None:
    script, count = readme_script((clone / "README.md").read_text(encoding="utf-8"))
    assert count >= 10
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS")}
    result = subprocess.run(
        ["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (clone / "out" / "nightly" / "current" / "manifest.json").is_file()
    assert '"participant":"46734487112"' in result.stdout  # the curl through nginx
