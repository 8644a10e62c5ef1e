"""Scheduler job definitions in jobs/: the config, systemd units, crontab line and Airflow DAG."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from convsum.cli import cli
from convsum.config import build_config, load_toml

JOBS = Path(__file__).resolve().parent.parent / "jobs"
CONFIG = JOBS / "nightly.toml"
SERVICE = JOBS / "convsum-nightly.service"
TIMER = JOBS / "convsum-nightly.timer"
CRONTAB = JOBS / "crontab"
DAG_FILE = JOBS / "convsum_nightly_dag.py"

# Where jobs/README.md installs the command and the configuration.
INSTALLED_CONVSUM = "/opt/convsum/.venv/bin/convsum"
INSTALLED_CONFIG = "/etc/convsum/nightly.toml"
METRICS = "/var/lib/node_exporter/textfile/convsum-run.prom"
NIGHTLY_ARGV = [INSTALLED_CONVSUM, "run", "--config", INSTALLED_CONFIG]
SCHEDULE = "30 2 * * *"
# Shell operators that end the convsum command on the crontab line.
SHELL_OPERATORS = frozenset({";", "&&", "||", "|", "&", ">", ">>", "<", ">&", "<&"})


def _unit(path: Path) -> configparser.ConfigParser:
    """Parse a systemd unit file: case-sensitive keys, `=` only, no interpolation."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def _crontab_line() -> str:
    lines = [
        line
        for line in CRONTAB.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(lines) == 1, f"expected one crontab entry, found {lines}"
    return lines[0]


def _cron_shell_command() -> str:
    """Return what cron hands to /bin/sh: everything after the five schedule fields."""
    return _crontab_line().split(None, 5)[5]


def _dag_tree() -> ast.Module:
    return ast.parse(DAG_FILE.read_text(encoding="utf-8"), filename=str(DAG_FILE))


def _dag_command() -> str:
    for node in _dag_tree().body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMMAND" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str), f"COMMAND must be a string, found {value!r}"
            return value
    raise AssertionError(f"{DAG_FILE}: no module-level COMMAND = '...'")


def _dag_call_keywords(function: str) -> dict[str, Any]:
    """Return the keyword arguments of the call to `function` in the DAG file, as source."""
    for node in ast.walk(_dag_tree()):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == function
        ):
            return {kw.arg: kw.value for kw in node.keywords if kw.arg}
    raise AssertionError(f"{DAG_FILE}: no call to {function}(...)")


def _service_argv() -> list[str]:
    return shlex.split(_unit(SERVICE)["Service"]["ExecStart"])


def _cron_argv() -> list[str]:
    lexer = shlex.shlex(_cron_shell_command(), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    argv: list[str] = []
    for token in lexer:
        if token in SHELL_OPERATORS:
            break
        argv.append(token)
    return argv


def _dag_argv() -> list[str]:
    return shlex.split(_dag_command())


JOB_COMMANDS: dict[str, Callable[[], list[str]]] = {
    "systemd": _service_argv,
    "cron": _cron_argv,
    "airflow": _dag_argv,
}


def test_jobs_nightly_config_builds() -> None:
    config = build_config(load_toml(CONFIG))
    found = {
        "messages": config.messages,
        "statuses": config.statuses,
        "out": config.out,
        "engine": config.engine,
        "page_size": config.page_size,
        "desc_pages": config.desc_pages,
        "memory_limit": config.memory_limit,
        "threads": config.threads,
        "log_format": getattr(config, "log_format", "<RunConfig has no log_format>"),
        "rebuild": getattr(config, "rebuild", "<RunConfig has no rebuild>"),
        "metrics_file": config.metrics_file,
    }
    assert found == {
        "messages": "/srv/sms/logs/messages",
        "statuses": "/srv/sms/logs/statuses",
        "out": "/srv/convsum/out",
        "engine": "duckdb",
        "page_size": 50,
        "desc_pages": True,
        "memory_limit": "4GB",
        "threads": None,
        "log_format": "json",
        "rebuild": True,
        "metrics_file": METRICS,
    }


def test_jobs_service_unit_keys() -> None:
    service = _unit(SERVICE)["Service"]
    found = {key: service.get(key) for key in ("Type", "User", "Restart", "ReadWritePaths")}
    assert found == {
        "Type": "oneshot",
        "User": "convsum",
        "Restart": "on-failure",
        "ReadWritePaths": "/srv/convsum/out /var/lib/node_exporter/textfile",
    }
    # 75 (the lock) is retried after a pause; 1 and 2 need a human.
    assert set(service["RestartPreventExitStatus"].split()) == {"1", "2"}
    assert service.get("RestartSec")
    for key in ("ProtectSystem", "PrivateTmp", "NoNewPrivileges"):
        assert service.get(key) in ("strict", "yes"), key
    # What the config asks of the run, the unit allows: writing the metrics file, and reaching
    # the bucket of sync_to (which the config offers, commented out).
    assert str(Path(METRICS).parent) in service["ReadWritePaths"].split()
    assert 'sync_to = "s3://' in CONFIG.read_text(encoding="utf-8")
    assert service.get("PrivateNetwork", "no") == "no"
    assert {"AF_INET", "AF_INET6"} <= set(service["RestrictAddressFamilies"].split())


def test_jobs_timer_unit_keys() -> None:
    timer = _unit(TIMER)
    found = {key: timer["Timer"].get(key) for key in ("OnCalendar", "Persistent", "Unit")}
    assert found == {
        "OnCalendar": "*-*-* 02:30:00 UTC",
        "Persistent": "true",
        "Unit": SERVICE.name,
    }
    assert timer["Timer"].get("RandomizedDelaySec")
    assert timer["Install"]["WantedBy"] == "timers.target"


def _installable_copies(tmp_path: Path) -> tuple[Path, Path]:
    """Copy both units, pointing ExecStart at this venv's convsum and the repo's config."""
    convsum = Path(sys.executable).parent / "convsum"
    assert convsum.is_file(), f"{convsum}: convsum is not installed in this environment"
    text = SERVICE.read_text(encoding="utf-8")
    assert INSTALLED_CONVSUM in text and INSTALLED_CONFIG in text
    text = text.replace(INSTALLED_CONVSUM, str(convsum)).replace(INSTALLED_CONFIG, str(CONFIG))
    service = tmp_path / SERVICE.name
    service.write_text(text, encoding="utf-8")
    timer = tmp_path / TIMER.name
    shutil.copyfile(TIMER, timer)
    return service, timer


def test_jobs_units_verify(tmp_path: Path) -> None:
    service, timer = _installable_copies(tmp_path)
    analyze = shutil.which("systemd-analyze")
    if analyze:
        # Works as root without a running systemd (a container): verify only loads the units.
        # It exits 0 on a setting it ignores (an unknown key, a bad value), so any output fails.
        result = subprocess.run(
            [analyze, "verify", "--man=no", "--recursive-errors=no", str(service), str(timer)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        output = result.stdout + result.stderr
        assert (result.returncode, output) == (0, ""), output
    else:
        # No systemd here: check what verify would refuse that a parser can see.
        argv = shlex.split(_unit(service)["Service"]["ExecStart"])
        assert Path(argv[0]).is_absolute() and Path(argv[0]).is_file(), argv
        assert _unit(service)["Service"]["Restart"] in ("no", "on-failure")
        assert (tmp_path / _unit(timer)["Timer"]["Unit"]).is_file()


def test_jobs_crontab_line_has_schedule_and_command() -> None:
    line = _crontab_line()
    fields = line.split(None, 5)
    assert fields[:5] == SCHEDULE.split(), line
    # cron turns an unescaped % into a newline and feeds the rest to standard input.
    assert not re.search(r"(?<!\\)%", line), line
    assert CRONTAB.read_text(encoding="utf-8").endswith("\n"), "cron ignores an unterminated line"


@pytest.mark.parametrize(("code", "mails"), [(0, False), (75, False), (1, True), (2, True)])
def test_jobs_crontab_prints_only_on_failure(tmp_path: Path, code: int, mails: bool) -> None:
    command = _cron_shell_command()
    run_text = " ".join(_cron_argv())
    log = tmp_path / "nightly.log"
    assert run_text in command and "/var/log/convsum/nightly.log" in command
    stub = command.replace(run_text, f"sh -c 'echo progress >&2; exit {code}'")
    stub = stub.replace("/var/log/convsum/nightly.log", str(log))
    result = subprocess.run(
        ["/bin/sh", "-c", stub], capture_output=True, text=True, check=False, timeout=10
    )
    printed = result.stdout + result.stderr
    assert bool(printed) == mails, printed
    assert log.read_text() == "progress\n"


def test_jobs_dag() -> None:
    if importlib.util.find_spec("airflow"):
        spec = importlib.util.spec_from_file_location("convsum_nightly_dag", DAG_FILE)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.dag
        task = dag.get_task("convsum_run")
        found = {
            "dag_id": dag.dag_id,
            "schedule": dag.timetable.summary,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "bash_command": task.bash_command,
        }
    else:
        keywords = _dag_call_keywords("DAG")
        names = ("dag_id", "schedule", "catchup", "max_active_runs")
        found = {name: ast.literal_eval(keywords[name]) for name in names}
        command = _dag_call_keywords("BashOperator")["bash_command"]
        found["bash_command"] = _dag_command() if ast.unparse(command) == "COMMAND" else None
    assert found == {
        "dag_id": "convsum_nightly",
        "schedule": SCHEDULE,
        "catchup": False,
        "max_active_runs": 1,
        "bash_command": _dag_command(),
    }


@pytest.mark.parametrize("job", sorted(JOB_COMMANDS))
def test_jobs_command_is_a_valid_run(job: str) -> None:
    argv = JOB_COMMANDS[job]()
    assert argv[:2] == [INSTALLED_CONVSUM, "run"], argv
    args = [str(CONFIG) if arg == INSTALLED_CONFIG else arg for arg in argv[2:]]
    run = cli.commands["run"]
    with run.make_context("run", args) as ctx:  # a click.UsageError fails the test
        file = load_toml(CONFIG)
        assert {k: ctx.params[k] for k in ("messages", "out")} == {
            k: file[k] for k in ("messages", "out")
        }


def test_jobs_every_scheduler_runs_the_same_command() -> None:
    commands = {job: argv() for job, argv in JOB_COMMANDS.items()}
    assert commands == dict.fromkeys(JOB_COMMANDS, NIGHTLY_ARGV)
    assert _unit(TIMER)["Timer"]["Unit"] == SERVICE.name


def test_jobs_readme_shows_the_installed_paths() -> None:
    readme = (JOBS / "README.md").read_text(encoding="utf-8")
    for text in (shlex.join(NIGHTLY_ARGV), "systemctl enable --now convsum-nightly.timer"):
        assert text in readme, text


def test_jobs_nightly_command_runs_on_the_demo_data(tmp_path: Path) -> None:
    """The scheduled command itself, with the config's paths pointed at the demo data."""
    demo = Path(__file__).resolve().parent.parent / "sample_data" / "demo"
    text = CONFIG.read_text(encoding="utf-8")
    for installed, here in (
        ("/srv/sms/logs/messages", demo / "messages"),
        ("/srv/sms/logs/statuses", demo / "statuses"),
        ("/srv/convsum/out", tmp_path / "out"),
        (METRICS, tmp_path / "convsum-run.prom"),
    ):
        assert f'"{installed}"' in text, installed
        text = text.replace(f'"{installed}"', f'"{here}"')
    config = tmp_path / "nightly.toml"
    config.write_text(text, encoding="utf-8")
    argv = [str(Path(sys.executable).parent / "convsum"), "run", "--config", str(config)]
    assert argv[1:3] == NIGHTLY_ARGV[1:3]
    for mode in ("full", "incremental"):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stderr.splitlines()]  # JSON lines only
        assert events[-1]["event"] == "published" and events[-1]["mode"] == mode
        assert "convsum_run_exit_code 0.0" in (tmp_path / "convsum-run.prom").read_text()
        assert {e["run_id"] for e in events} == {events[0]["run_id"]}
