"""The token store: its commands, its files (the server's contract), and that runs leave it be."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from convsum.cli import cli, tokens
from convsum.config import RunConfig
from convsum.publish.paths import name_segments
from convsum.results import RunReport
from convsum.run import run_job
from convsum.tokens import (
    add_token,
    import_tokens,
    list_tokens,
    owner_dir,
    revoke_token,
    token_hash,
)
from tests.conftest import MESSAGE_TYPES, STATUS_TYPES, at, message, status, write_parquet

KEY_100 = "AbCdEfGhIjKlMnOpQrStUv=="
KEY_200 = "ZyXwVuTsRqPoNmLkJi.~+/-0"


def _invoke(*args: str, stdin: str | bytes | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


def _store(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((out / "tokens" / "store.json").read_bytes())
    return document


def _owners_files(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (out / "tokens" / "owners").iterdir()}


def _files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    root.mkdir()
    return root


def test_tokens_every_command_has_help() -> None:
    for name, command in tokens.commands.items():
        assert command.help and len(command.help.split()) > 5, name
        result = _invoke("tokens", name, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_tokens_add_prints_the_token_once_and_stores_only_its_hash(out: Path) -> None:
    result = _invoke("tokens", "add", str(out), "acme")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token not in result.stderr
    assert _files_holding(out, token) == []
    (entry,) = _store(out)["tokens"]
    assert entry["sha256"] == token_hash(token)
    assert owner_dir(out, token) == "/".join(name_segments("acme"))


def test_tokens_add_never_shows_the_token_again(out: Path) -> None:
    token = _invoke("tokens", "add", str(out), "acme").stdout.strip()
    for args in (["list", str(out)], ["list", str(out), "--format", "json"]):
        result = _invoke("tokens", *args)
        assert token not in result.output
    assert token not in _invoke("tokens", "add", str(out), "acme").output


def test_tokens_store_layout_is_the_servers_contract(out: Path) -> None:
    info, token = add_token(out, "acme")
    document = _store(out)
    assert document == {
        "format": 1,
        "tokens": [
            {
                "id": info.id,
                "owner": "acme",
                "sha256": token_hash(token),
                "created": info.created,
                "revoked": None,
            }
        ],
    }
    assert len(info.id) == 15 and info.id.startswith("tk_") and int(info.id[3:], 16) >= 0
    assert len(info.created) == 20 and info.created.endswith("Z")
    assert (out / "tokens" / "store.json").stat().st_mode & 0o777 == 0o600
    owners_file = out / "tokens" / "owners" / token_hash(token)
    assert owners_file.stat().st_mode & 0o777 == 0o644
    assert owners_file.read_bytes() == b"/".join(s.encode() for s in name_segments("acme"))
    assert (out / "tokens" / ".convsum").is_file()
    assert (out / ".convsum").is_file()


def test_tokens_import_gateway_keys(out: Path) -> None:
    keys = f"# gateway keys\n\nip1-100\t{KEY_100}\r\n  \nip1-200\t{KEY_200}\n#\tnot\ta key\n"
    result = _invoke("tokens", "import", str(out), stdin=keys)
    assert result.exit_code == 0, result.output
    assert result.stderr == "convsum: imported 2 tokens\n"
    assert owner_dir(out, KEY_100) == "/".join(name_segments("ip1-100"))
    assert owner_dir(out, KEY_200) == "/".join(name_segments("ip1-200"))
    assert [(t.owner, t.revoked) for t in list_tokens(out)] == [
        ("ip1-100", None),
        ("ip1-200", None),
    ]


def test_tokens_import_twice_is_a_no_op(out: Path) -> None:
    keys = f"ip1-100\t{KEY_100}\nip1-100\t{KEY_100}\n"
    assert _invoke("tokens", "import", str(out), stdin=keys).stderr == "convsum: imported 1 token\n"
    before = _store(out)
    result = _invoke("tokens", "import", str(out), stdin=keys)
    assert result.exit_code == 0, result.output
    assert result.stderr == "convsum: imported 0 tokens\n"
    assert _store(out) == before


def test_tokens_import_same_token_for_another_owner_is_refused(out: Path) -> None:
    import_tokens(out, [f"ip1-100\t{KEY_100}"])
    before = _store(out)
    result = _invoke("tokens", "import", str(out), stdin=f"ip1-200\t{KEY_200}\nacme\t{KEY_100}\n")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: line 2: this token is already stored for another")
    assert KEY_100 not in result.output
    assert _store(out) == before


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"ip1-100 {KEY_100}", "expected OWNER<TAB>TOKEN"),
        (f"ip1-100\t{KEY_100}\textra", "expected OWNER<TAB>TOKEN"),
        (f"\t{KEY_100}", "the owner is empty"),
        ("ip1-100\tshort=token", "16 to 512 characters"),
        ("ip1-100\t" + "a" * 513, "16 to 512 characters"),
        ("ip1-100\tAbCdEfGhIjKlMnOp\"r'", "16 to 512 characters"),
        ("ip1-100\tAbCdEfGhIjKlMnOp=Qr", "16 to 512 characters"),
        (f"ip1-200\t{KEY_100}", "the same token as line 1, another owner"),
    ],
)
def test_tokens_import_malformed_line_imports_nothing(out: Path, line: str, why: str) -> None:
    keys = f"ip1-100\t{KEY_100}\n{line}\nip1-300\t{KEY_200}\n"
    result = _invoke("tokens", "import", str(out), stdin=keys)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: line 2: "), result.stderr
    assert why in result.stderr
    assert result.stderr.count("\n") == 1
    token = line.partition("\t")[2] or line
    assert KEY_100 not in result.output and token not in result.output
    assert list_tokens(out) == []


def test_tokens_import_refuses_bytes_that_are_not_utf8(out: Path) -> None:
    result = _invoke("tokens", "import", str(out), stdin=b"ip1-\xff\t" + KEY_100.encode())
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: line 1: the owner is not UTF-8 text")
    assert list_tokens(out) == []


def test_tokens_accepts_every_token68_character(out: Path) -> None:
    tokens68 = ["A" * 16, "a" * 512, "az09AZ._~+/-" * 2 + "==", "Zz0._~+/-" * 2 + "="]
    assert import_tokens(out, [f"acme\t{t}" for t in tokens68]) == len(tokens68)
    assert all(owner_dir(out, t) for t in tokens68)


def test_tokens_list_shows_id_owner_created_and_revoked(out: Path) -> None:
    kept, kept_token = add_token(out, "acme")
    gone, gone_token = add_token(out, "ip1-100")
    revoked = revoke_token(out, gone.id)
    result = _invoke("tokens", "list", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{kept.id}\tacme\t{kept.created}\n"
        f"{gone.id}\tip1-100\t{gone.created}\trevoked {revoked.revoked}\n"
    )
    for secret in (kept_token, gone_token, token_hash(kept_token), token_hash(gone_token)):
        assert secret not in result.output


def test_tokens_list_json(out: Path) -> None:
    info, token = add_token(out, "acme")
    result = _invoke("tokens", "list", str(out), "--format", "json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == [
        {"id": info.id, "owner": "acme", "created": info.created, "revoked": None}
    ]
    assert token_hash(token) not in result.output


def test_tokens_list_quotes_an_owner_that_is_not_one_plain_line(out: Path) -> None:
    info, _ = add_token(out, "evil\nowner")
    assert (
        _invoke("tokens", "list", str(out)).stdout == f'{info.id}\t"evil\\nowner"\t{info.created}\n'
    )


def test_tokens_list_of_a_root_without_tokens_is_empty(out: Path) -> None:
    result = _invoke("tokens", "list", str(out))
    assert (result.exit_code, result.output) == (0, "")


def test_tokens_revoke_removes_the_owners_file(out: Path) -> None:
    info, token = add_token(out, "acme")
    result = _invoke("tokens", "revoke", str(out), info.id)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"convsum: {info.id} of owner acme revoked 20")
    assert result.stdout == ""
    assert owner_dir(out, token) is None
    assert _owners_files(out) == {}
    assert _store(out)["tokens"][0]["revoked"] == list_tokens(out)[0].revoked != None  # noqa: E711


def test_tokens_revoke_twice_keeps_the_first_time(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, _ = add_token(out, "acme")
    first = revoke_token(out, info.id)
    monkeypatch.setattr("convsum.tokens._now", lambda: "2099-01-01T00:00:00Z")
    assert revoke_token(out, info.id) == first


def test_tokens_revoke_unknown_id(out: Path) -> None:
    add_token(out, "acme")
    before = _store(out)
    result = _invoke("tokens", "revoke", str(out), "tk_000000000000")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: no token 'tk_000000000000' in ")
    assert result.stderr.count("\n") == 1
    assert _store(out) == before


def test_tokens_owners_files_are_exactly_the_active_tokens(out: Path) -> None:
    _, token_a = add_token(out, "acme")
    b, token_b = add_token(out, "../x")
    import_tokens(out, [f"ip1-100\t{KEY_100}", f"ip1-200\t{KEY_200}"])
    (out / "tokens" / "owners" / "stray").write_text("acme")
    revoke_token(out, b.id)
    ip200 = next(t for t in list_tokens(out) if t.owner == "ip1-200")
    revoke_token(out, ip200.id)
    assert _owners_files(out) == {
        token_hash(token_a): "/".join(name_segments("acme")),
        token_hash(KEY_100): "/".join(name_segments("ip1-100")),
    }
    assert owner_dir(out, token_b) is None and owner_dir(out, KEY_200) is None


def test_tokens_owner_dir_of_an_unknown_or_malformed_token(out: Path) -> None:
    add_token(out, "acme")
    assert owner_dir(out, "A" * 43) is None
    assert owner_dir(out, "../../store.json") is None
    assert owner_dir(out / "nowhere", "A" * 43) is None


def test_tokens_misuse_exits_2(tmp_path: Path, out: Path) -> None:
    for args in (
        ["tokens", "add", str(out)],
        ["tokens", "add", str(out), ""],
        ["tokens", "add", str(tmp_path / "missing"), "acme"],
        ["tokens", "list", str(out), "--format", "xml"],
        ["tokens", "revoke", str(out)],
        ["tokens", "nope", str(out)],
    ):
        result = _invoke(*args)
        assert result.exit_code == 2, (args, result.output)


def test_tokens_refuse_a_directory_that_is_not_an_output_root(out: Path) -> None:
    (out / "someone-elses.txt").write_text("keep")
    result = _invoke("tokens", "add", str(out), "acme")
    assert result.exit_code == 1, result.output
    assert "not a convsum output root" in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["someone-elses.txt"]


def test_tokens_refuse_a_damaged_store(out: Path) -> None:
    add_token(out, "acme")
    (out / "tokens" / "store.json").write_text('{"format": 2, "tokens": []}')
    result = _invoke("tokens", "add", str(out), "acme")
    assert result.exit_code == 1, result.output
    assert "not a token store of format 1" in result.stderr
    assert result.stdout == ""


def _run(out: Path, tmp_path: Path, n: int, full: bool = False) -> RunReport:
    """Run the job over the input files 0..n-1 (one message each; those not yet written)."""
    for i in range(n):
        if (tmp_path / "in" / "messages" / f"{i}.parquet").exists():
            continue
        write_parquet(
            tmp_path / "in" / "messages" / f"{i}.parquet",
            [message(f"m{i}", created=at(i))],
            MESSAGE_TYPES,
        )
        write_parquet(
            tmp_path / "in" / "statuses" / f"{i}.parquet", [status(f"m{i}", 201)], STATUS_TYPES
        )
    config = RunConfig(
        messages=str(tmp_path / "in" / "messages"),
        statuses=str(tmp_path / "in" / "statuses"),
        out=str(out),
    )
    return run_job(config, full=full)


def test_tokens_survive_full_and_incremental_runs(tmp_path: Path, out: Path) -> None:
    _, token = add_token(out, "acme")  # before any run: the root is made an output root
    import_tokens(out, [f"ip1-100\t{KEY_100}"])
    revoked, _ = add_token(out, "acme")
    revoke_token(out, revoked.id)
    store, owners = _store(out), _owners_files(out)
    reports = [_run(out, tmp_path, 1), _run(out, tmp_path, 2), _run(out, tmp_path, 2, full=True)]
    assert [r.mode for r in reports] == ["full", "incremental", "full"]
    assert len(list((out / "trees").iterdir())) == 1  # the old trees were removed
    assert (_store(out), _owners_files(out)) == (store, owners)
    assert owner_dir(out, token) == "/".join(name_segments("acme"))
    assert not (out / "current" / "tokens").exists()
    assert _files_holding(out, token) == []


_ADD_MANY = """
import sys
from pathlib import Path
from convsum.tokens import add_token
out, go, ready, count, owner = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    pass
for _ in range(int(count)):
    add_token(Path(out), owner)
"""


def test_tokens_concurrent_adds_all_land(tmp_path: Path, out: Path) -> None:
    go, each, owners = tmp_path / "go", 30, ("acme", "ip1-100")
    adders = [
        subprocess.Popen(
            [sys.executable, "-c", _ADD_MANY, str(out), str(go), str(tmp_path / o), str(each), o]
        )
        for o in owners
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / o).exists() for o in owners) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both are ready: their adds overlap
    assert [adder.wait(timeout=120) for adder in adders] == [0, 0]
    stored = list_tokens(out)
    assert sorted(t.owner for t in stored) == ["acme"] * each + ["ip1-100"] * each
    assert len({t.id for t in stored}) == 2 * each
    assert len(_owners_files(out)) == 2 * each


def test_tokens_add_through_two_processes_of_the_command(out: Path) -> None:
    command = [sys.executable, "-m", "convsum", "tokens", "add", str(out)]
    adders = [
        subprocess.Popen([*command, owner], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for owner in ("acme", "ip1-100")
    ]
    printed = [adder.communicate(timeout=120) for adder in adders]
    assert [adder.returncode for adder in adders] == [0, 0], printed
    tokens_printed = [stdout.decode().strip() for stdout, _ in printed]
    assert [owner_dir(out, t) for t in tokens_printed] == [
        "/".join(name_segments("acme")),
        "/".join(name_segments("ip1-100")),
    ]
