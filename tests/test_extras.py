"""The lean install: the default job needs no extra, and a part that needs one refuses without it.

The commands run as processes whose interpreter cannot import the extras' modules (each is None
in sys.modules, as a missing package is to `import` and to `importlib.util.find_spec`).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from convsum.extras import EXTRAS
from tests.support.data import DEMO

ROOT = Path(__file__).resolve().parent.parent
ALL_MODULES = tuple(module for extra in EXTRAS.values() for module in extra.modules)


def _without(
    modules: tuple[str, ...], *args: str | Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run `convsum ARGS` in `cwd`, in an interpreter where `modules` cannot be imported."""
    script = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({list(modules)!r}))\n"
        "from convsum.cli import cli\n"
        "cli(prog_name='convsum')\n"
    )
    argv = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def lean_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data published by an interpreter without any extra."""
    out = tmp_path_factory.mktemp("lean") / "out"
    ran = _without(
        ALL_MODULES,
        *("run", "--messages", DEMO / "messages", "--statuses", DEMO / "statuses"),
        *("--out", out, "--log-format", "json"),
        cwd=out.parent,
    )
    assert ran.returncode == 0, ran.stderr
    return out


def test_extras_are_the_packages_optional_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    optional = set(pyproject["project"]["optional-dependencies"]) - {"test"}
    assert optional == set(EXTRAS)
    assert (
        f"convsum[{','.join(sorted(EXTRAS))}]"
        in pyproject["project"]["optional-dependencies"]["test"]
    )


@pytest.mark.parametrize(
    "args",
    [
        ("report", "outcomes", "{out}"),
        ("query", "{out}", "SELECT count(*) FROM conversations"),
        ("status", "{out}"),
        ("nginx-conf", "{out}"),
        ("tokens", "add", "{out}", "acme"),
    ],
    ids=lambda args: args[0],
)
def test_extras_the_default_job_needs_none(lean_out: Path, args: tuple[str, ...]) -> None:
    assert (lean_out / "current" / "manifest.json").is_file()
    done = _without(ALL_MODULES, *(arg.format(out=lean_out) for arg in args), cwd=lean_out.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout


@pytest.mark.parametrize(
    ("extra", "args"),
    [
        ("polars", ("run", "--messages", "m", "--out", "o", "--engine", "polars")),
        ("spark", ("run", "--messages", "m", "--out", "o", "--engine", "spark")),
        ("s3", ("run", "--messages", "m", "--out", "o", "--sync-to", "s3://bucket/api")),
        ("s3", ("sync", "{out}", "s3://bucket/api")),
        ("s3", ("nginx-conf", "{out}", "--from", "s3://bucket/api")),
        ("html", ("html", "{out}", "-o", "{out}/../report.html")),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0],
)
def test_extras_a_part_without_its_extra_exits_2_naming_it(
    lean_out: Path, extra: str, args: tuple[str, ...]
) -> None:
    before = sorted(path.name for path in lean_out.parent.iterdir())
    command = (arg.format(out=lean_out) for arg in args)
    refused = _without(EXTRAS[extra].modules, *command, cwd=lean_out.parent)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.splitlines()
    assert f"pip install 'convsum[{extra}]'" in lines[-1], refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(path.name for path in lean_out.parent.iterdir()) == before
