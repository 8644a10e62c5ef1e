"""The token store: which Bearer token reads which owner's files, kept as hashes only.

It lives with the output root, beside the trees (a run removes only what is under `trees/` and
its own work directories, so the store outlives every run, rebuild and sync):

    tokens/.convsum            the mark: made by convsum (see publish/tree.py)
    tokens/.lock               held (flock) by the one command changing the store
    tokens/store.json          every token: id, owner, SHA-256, created, revoked (mode 0600)
    tokens/owners/<sha256>     one file per active token, nothing else (mode 0644): the owner's
                               directory under the API root, `"/".join(name_segments(owner))`

The server hashes the token a request presents and reads `owners/<hash>`: the file's existence
makes the token valid, its content is where the owner's data lives. Every file is replaced by a
rename, so a change reaches the next request with no reload. `store.json` is the record;
`owners/` is rebuilt from it after every change, so a command stopped half-way is set right by
the next one. A token is never written anywhere, nor put in an error message: only its hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

import orjson

from convsum.errors import PublishError, TokenError
from convsum.publish import durable
from convsum.publish.paths import name_segments
from convsum.publish.tree import MARK, OutputRoot, make_marked

TOKENS = "tokens"
STORE = "store.json"
OWNERS = "owners"
LOCK = ".lock"
FORMAT = 1
MIN_LENGTH, MAX_LENGTH = 16, 512
# RFC 6750 section 2.1: the b64token (token68) syntax of a Bearer credential.
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_TOKEN_RULE = (
    f"a token is {MIN_LENGTH} to {MAX_LENGTH} characters of A-Z a-z 0-9 . _ ~ + / - "
    "then optional = (RFC 6750 token68)"
)


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never the token, nor its hash."""

    id: str
    owner: str
    created: str
    revoked: str | None


class _Entry(TypedDict):
    id: str
    owner: str
    sha256: str
    created: str
    revoked: str | None


def token_hash(token: str) -> str:
    """Return the hexadecimal SHA-256 of the token's UTF-8 bytes: its name in the store."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_token(token: str) -> bool:
    """Return whether `token` has the syntax and length of a Bearer token that is accepted."""
    return MIN_LENGTH <= len(token) <= MAX_LENGTH and _TOKEN68.fullmatch(token) is not None


def owner_path(owner: str) -> str:
    """Return the owner's directory relative to the API root (the content of its owners files)."""
    return "/".join(name_segments(owner))


def owner_dir(out: Path, token: str) -> str | None:
    """Return the directory of the owner that `token` reads, or None for no active token.

    What the server does: hash the token and read its owners file. The lookup is by file name,
    so no secret is compared here.
    """
    if not is_token(token):
        return None
    try:
        return (out / TOKENS / OWNERS / token_hash(token)).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None


def add_token(out: Path, owner: str) -> tuple[TokenInfo, str]:
    """Make a new token for `owner`; return what may be shown of it, and the token itself.

    The token is returned once: only its hash is stored.
    """
    check_owner(owner)
    token = secrets.token_urlsafe(32)
    with _changing(out) as entries:
        entry = _new_entry(entries, owner, token_hash(token))
        entries.append(entry)
    return _info(entry), token


def import_tokens(out: Path, lines: Iterable[str]) -> int:
    """Store the tokens of `OWNER<TAB>TOKEN` lines; return how many were new.

    Blank lines and lines starting with `#` are skipped. A token already stored for the same
    owner is skipped; for another owner it is an error. Any error names its line (never the
    token) and imports nothing.
    """
    wanted = _parse_lines(lines)
    with _changing(out) as entries:
        stored = {entry["sha256"]: entry for entry in entries}
        added = 0
        for number, (owner, digest) in wanted.items():
            known = stored.get(digest)
            if known is not None and known["owner"] != owner:
                msg = (
                    f"line {number}: this token is already stored for another owner ({known['id']})"
                )
                raise TokenError(msg)
            if known is None:
                stored[digest] = _new_entry(entries, owner, digest)
                entries.append(stored[digest])
                added += 1
    return added


def list_tokens(out: Path) -> list[TokenInfo]:
    """Return every stored token, revoked ones included, oldest first."""
    return [_info(entry) for entry in _read(out / TOKENS / STORE)]


def revoke_token(out: Path, token_id: str) -> TokenInfo:
    """Revoke the token `token_id`: its owners file goes, so the server refuses it at once.

    A token revoked before keeps its first revocation time.
    """
    with _changing(out) as entries:
        for index, entry in enumerate(entries):
            if entry["id"] == token_id:
                if entry["revoked"] is None:
                    entries[index] = {**entry, "revoked": _now()}
                return _info(entries[index])
    msg = f"no token {token_id!r} in {out / TOKENS / STORE}; `convsum tokens list` shows the ids"
    raise TokenError(msg)


def check_owner(owner: str) -> str:
    """Return `owner` if it can name an owner in the store: not empty, and UTF-8 text."""
    if not owner:
        raise TokenError("the owner is empty")
    try:
        owner.encode("utf-8")
    except UnicodeEncodeError:
        raise TokenError("the owner is not UTF-8 text") from None
    return owner


def _parse_lines(lines: Iterable[str]) -> dict[int, tuple[str, str]]:
    """Return (owner, token hash) by line number; raise TokenError at the first bad line."""
    wanted: dict[int, tuple[str, str]] = {}
    owners: dict[str, tuple[int, str]] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        owner, tab, token = line.partition("\t")
        token = token.strip()
        try:
            check_owner(owner)
        except TokenError as exc:
            raise TokenError(f"line {number}: {exc}; expected OWNER<TAB>TOKEN") from None
        if not tab or "\t" in token:
            raise TokenError(f"line {number}: expected OWNER<TAB>TOKEN")
        if not is_token(token):
            raise TokenError(f"line {number}: {_TOKEN_RULE}")
        digest = token_hash(token)
        first = owners.setdefault(digest, (number, owner))
        if first[1] != owner:
            raise TokenError(f"line {number}: the same token as line {first[0]}, another owner")
        wanted[number] = (owner, digest)
    return wanted


def _new_entry(entries: list[_Entry], owner: str, digest: str) -> _Entry:
    """Return a new active entry, with an id that no entry in `entries` has."""
    ids = {entry["id"] for entry in entries}
    token_id = f"tk_{secrets.token_hex(6)}"
    while token_id in ids:
        token_id = f"tk_{secrets.token_hex(6)}"
    return {"id": token_id, "owner": owner, "sha256": digest, "created": _now(), "revoked": None}


def _info(entry: _Entry) -> TokenInfo:
    return TokenInfo(entry["id"], entry["owner"], entry["created"], entry["revoked"])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _changing(out: Path) -> Iterator[list[_Entry]]:
    """Yield the stored entries to change in place; then write them and the owners files.

    The store's lock is held throughout, so two commands never interleave: the second waits.
    Nothing is written if the block raises.
    """
    directory = _prepare(out)
    try:
        with (directory / LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = _read(directory / STORE)
            before = list(entries)
            yield entries
            if entries != before:
                _write_store(directory, entries)
            _write_owners(directory, entries)
    except OSError as exc:
        msg = f"{directory}: cannot update the token store ({exc.strerror})"
        raise TokenError(msg) from exc


def _prepare(out: Path) -> Path:
    """Return the store's directory, made if needed; `out` must be a directory convsum may use.

    An empty directory becomes an output root (so a later run publishes there); a non-empty
    one without the mark is refused, as a run refuses it.
    """
    if not out.is_dir():
        raise TokenError(f"{out}: not a directory; give an output root")
    directory = out / TOKENS
    try:
        if not (out / MARK).exists():
            _claim(out)
        make_marked(directory)
        (directory / OWNERS).mkdir(exist_ok=True)
    except OSError as exc:
        raise TokenError(f"{directory}: cannot make the token store ({exc.strerror})") from exc
    return directory


def _claim(out: Path) -> None:
    """Make `out` an output root, as a run does, unless another command just did (a second
    command sees the first one's mark being made, and takes the root for not empty)."""
    try:
        OutputRoot(out).claim()
    except PublishError:
        if not (out / MARK).is_file():
            raise


def _read(store: Path) -> list[_Entry]:
    """Return the entries of `store.json` (none when there is no store yet)."""
    try:
        document = orjson.loads(store.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError) as exc:
        raise TokenError(f"{store}: unreadable token store ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TokenError(f"{store}: not a token store of format {FORMAT}")
    entries: list[_Entry] = document.get("tokens", [])
    keys = set(_Entry.__annotations__)
    if not isinstance(entries, list) or any(
        not isinstance(entry, dict) or set(entry) != keys for entry in entries
    ):
        raise TokenError(f"{store}: a token entry lacks one of {', '.join(sorted(keys))}")
    return entries


def _write_store(directory: Path, entries: list[_Entry]) -> None:
    document = {"format": FORMAT, "tokens": entries}
    body = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    _replace(directory, directory / STORE, body, 0o600)
    durable.sync_directory(directory)


def _write_owners(directory: Path, entries: list[_Entry]) -> None:
    """Make `owners/` hold exactly one file per active entry: first remove, then write.

    Removing first makes a revocation take effect before anything else is written.
    """
    owners = directory / OWNERS
    active = {e["sha256"]: owner_path(e["owner"]) for e in entries if e["revoked"] is None}
    for path in owners.iterdir():
        if path.name not in active:
            path.unlink(missing_ok=True)
    for digest, target in active.items():
        path = owners / digest
        body = target.encode("utf-8")
        if not path.is_file() or path.read_bytes() != body or path.stat().st_mode & 0o777 != 0o644:
            _replace(directory, path, body, 0o644)
    durable.sync_directory(owners)


def _replace(directory: Path, path: Path, body: bytes, mode: int) -> None:
    """Write `body` to `path` atomically, with `mode`: a temporary file in `directory`, fsynced,
    then renamed (the lock makes the temporary file's name the caller's alone)."""
    tmp = directory / f".{path.name}.tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # the umask, or an earlier temporary file, may differ
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
