"""The commands of the README and of docs/ work as written, in order, from a fresh clone.

Every `sh` block runs, and every `$ ` line of a `console` block (a transcript) runs and must exit
as its transcript shows: 1 when it ends in an `Error:` line, else 0. `shell` blocks (commands for
a server, the development verbs) are for reading only. The README runs first, then each page of
docs/ in the order of its name, all in one shell: a page's examples may read what the README
published (its `out/nightly`) and use the PATH it set. The clone is a copy of the repository's
files (tracked, and untracked but not ignored) that shares this environment's `.venv`, as
`make run` would have built it; `make test` itself is not run again from inside the suite.
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


def doc_paths(root: Path) -> list[Path]:
    """Return the documents whose commands run, in the order they run: the README, then docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def doc_commands(doc: str, name: str) -> tuple[list[str], int]:
    """Return the bash lines running one document's commands, and how many commands they run."""
    lines: list[str] = []
    count = 0
    for kind, body in _BLOCK.findall(doc):
        if kind == "sh":
            commands = [c for c in body.splitlines() if not _NOT_FROM_THE_SUITE.match(c)]
            lines += commands
            count += sum(1 for c in commands if c.strip() and not c.lstrip().startswith("#"))
        elif kind == "console":
            expected = 1 if re.search(r"^Error:", body, re.MULTILINE) else 0
            for command in (c[2:] for c in body.splitlines() if c.startswith("$ ")):
                quoted = shlex.quote(f"{name}: {command}")
                lines.append(
                    f"set +e; {command} >/dev/null 2>&1; code=$?; set -e; "
                    f'[ "$code" -eq {expected} ] || '
                    f'{{ echo {quoted}" exited $code, not {expected}" >&2; exit 1; }}'
                )
                count += 1
    return lines, count


def docs_script(docs: list[tuple[str, str]]) -> tuple[str, int]:
    """Return a bash script running the commands of (name, text) documents in order, and a count."""
    lines = ["set -eo pipefail", "trap 'make serve-stop >/dev/null 2>&1 || true' EXIT"]
    count = 0
    for name, text in docs:
        commands, counted = doc_commands(text, name)
        lines += [f"echo {shlex.quote('--- ' + name)}", *commands]
        count += counted
    return "\n".join(lines) + "\n", count


def readme_script(readme: str) -> tuple[str, int]:
    """Return a bash script running the README's commands, and how many commands it runs."""
    return docs_script([("README.md", readme)])


def _repository_files() -> list[str]:
    """Return the files of the checkout: tracked ones, and untracked ones that are not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return sorted({name for name in listed.decode().split("\0") if name})


def _stamp_names(pyproject: Path) -> tuple[str, str]:
    """Return the names of the stamps that the Makefile expects for this pyproject.toml: the
    whole install's (the test tools), then the job's alone."""
    with pyproject.open("rb") as text:
        checksum = subprocess.run(["cksum"], stdin=text, check=True, capture_output=True).stdout
    return f".installed-{checksum.split()[0].decode()}", f".job-{checksum.split()[0].decode()}"


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """Copy the repository's files (keeping their times, so make sees the environment current)."""
    target = tmp_path / "convsum"
    for name in _repository_files():
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    venv = Path(sys.prefix)
    stamps = _stamp_names(target / "pyproject.toml")
    if not all((venv / stamp).exists() for stamp in stamps):
        # make would install into this shared environment from the clone, which is removed after
        # the test: an environment built from another pyproject.toml must be rebuilt first.
        pytest.fail(f"{venv} was not built from this pyproject.toml: run make once (no {stamps})")
    for stamp in stamps:
        (venv / stamp).touch()  # newer than the copied pyproject.toml: make installs nothing
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


def test_readme_script_runs_the_documents_in_order() -> None:
    script, count = docs_script(
        [("README.md", "```sh\nmake run\n```\n"), ("docs/a.md", "```console\n$ convsum x\n```\n")]
    )
    assert count == 2
    assert script.index("make run") < script.index("convsum x")
    assert "docs/a.md: " in script  # a failing transcript line names its document


def test_readme_documents_start_with_the_readme(tmp_path: Path) -> None:
    for name in ("README.md", "docs/b.md", "docs/a.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    docs = [p.relative_to(tmp_path).as_posix() for p in doc_paths(tmp_path)]
    assert docs == ["README.md", "docs/a.md", "docs/b.md"]


def test_readme_commands_run_from_a_fresh_clone(clone: Path) -> None:
    docs = [
        (path.relative_to(clone).as_posix(), path.read_text(encoding="utf-8"))
        for path in doc_paths(clone)
    ]
    assert len(docs) > 1, "the clone holds no docs/ pages"
    script, count = docs_script(docs)
    assert count >= 10
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS")}
    result = subprocess.run(
        ["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (clone / "out" / "nightly" / "current" / "manifest.json").is_file()
    assert '"participant":"46734487112"' in result.stdout  # the curl through nginx
