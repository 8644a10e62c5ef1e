"""Map owner and participant names to safe, unique, servable paths inside the output tree.

A name that can stand in a URL path segment (SPEC section 4: at most `MAX_SERVED_BYTES` bytes,
no `/`, no control character, not `.` or `..`) keeps its own text as its path segment, behind
two fan-out directories taken from the MD5 of its UTF-8 bytes (hex digits 1-2, then 3-4), so that
a web server can find it from the URL alone (see `publish/nginx.py`). An owner's segment is a
directory; a participant's is the first part of the names of the conversation's files, which lie
in the fan-out directory itself (`conversation_file`): a conversation costs no directory of its
own. A hash spreads any set of
names, those that share a prefix or a suffix (`t1-prod`, `t2-prod`, ...) included, over 65,536
leaf directories: about 150 names each at 10 million. Every other name is written as
hexadecimal (or, when long, as its SHA-256) under the reserved fan-out directory `~`, which no
servable name's fan-out directory (hexadecimal digits) can equal. Neither form can leave the
output root, and no two names share a path.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from convsum.config import LIST_NAMES
from convsum.errors import PublishError

MAX_SERVED_BYTES = 200
SUMMARY_FILE = "summary.json"
MIN_PAGES_PER_GROUP = 100
MAX_HEX = 200  # an unservable name of up to 100 bytes is stored as its hexadecimal text
RESERVED_FANOUT = "~"
# The version of the rules below, recorded in the manifest's layout and in what a state store
# must match to be added to: a tree of another layout is rebuilt, never updated in place.
# 1: fan-out from the name's last four bytes; 2: from the MD5 of its bytes; 3: a conversation's
# first page group in its own directory; 4: a conversation's files named after it in its fan-out
# directory, with no directory of its own.
LAYOUT_VERSION = 4


def check_layout(layout: Mapping[str, Any], where: str, remedy: str) -> None:
    """Raise PublishError unless `layout` (a manifest's) is the one this version serves.

    A manifest without a version is of layout 1. `where` names the manifest, `remedy` what
    the user runs to get a tree of this layout.
    """
    version = layout.get("version", 1)
    if version != LAYOUT_VERSION:
        msg = (
            f"{where}: a tree of layout {version}, which this convsum (layout {LAYOUT_VERSION}) "
            f"cannot serve; {remedy}"
        )
        raise PublishError(msg)


def is_servable(name: str) -> bool:
    """Return whether `name` can be requested as one URL path segment."""
    raw = name.encode("utf-8", "surrogatepass")
    return (
        0 < len(raw) <= MAX_SERVED_BYTES
        and name not in (".", "..")
        and "/" not in name
        and not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name)
    )


def fanout(name: str) -> tuple[str, str]:
    """Return the two fan-out directories of a servable name.

    They are the first two and the next two hexadecimal digits of the MD5 of the name's UTF-8
    bytes: the bytes nginx decodes from the URL's path segment, which it hashes the same way.
    MD5 spreads names, nothing more: a name's own text stays its leaf, so no two names share one.
    """
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()
    return digest[:2], digest[2:4]


def name_segments(name: str) -> tuple[str, ...]:
    """Return the path segments under which `name`'s files live.

    An unservable name is stored as `~/<shard>/x<hex of its bytes>` when that fits one directory
    name, else as `~/<shard>/h<SHA-256 of its bytes>`, so every stored path stays short whatever
    the name's length (names of 64 KiB are tested). `x` and `h` names never equal each other.
    """
    if is_servable(name):
        return (*fanout(name), name)
    raw = name.encode("utf-8", "surrogatepass")
    hexed = raw.hex()
    shard = hashlib.sha256(hexed.encode()).hexdigest()[:2]
    leaf = f"x{hexed}" if len(hexed) <= MAX_HEX else f"h{hashlib.sha256(raw).hexdigest()}"
    return (RESERVED_FANOUT, shard, leaf)


def conversation_path(owner: str, participant: str) -> str:
    """Return the path of one conversation under the served API root: each of its files is this
    path, a `.`, and the file's name (`conversation_file`)."""
    return "/".join((*name_segments(owner), "v2", "conversations", *name_segments(participant)))


def conversation_file(conversation: str, name: str) -> str:
    """Return the path of file `name` (`SUMMARY_FILE` or a `page_file`) of a conversation.

    `ab/cd/4601` and `summary.json` give `ab/cd/4601.summary.json`, in the fan-out directory.
    No two (participant, file) pairs give one path: a file's name is one of `summary.json`,
    `LIST.ORDER.START.json` and `pGROUP/...`, and no such name ends with `.` and another one,
    so the name is the only way to split the path (`conversation_files` relies on it).
    """
    return f"{conversation}.{name}"


_PAGE_NAME = rf"(?:{'|'.join(LIST_NAMES)})\.(?:asc|desc)\.[0-9]+\.json"
_FILE_NAME = re.compile(rf"{re.escape(SUMMARY_FILE)}|(?:p[0-9]+/)?{_PAGE_NAME}")


def conversation_files(conversation: str, paths: Iterable[str]) -> Iterator[str]:
    """Yield the names of the files of `conversation` among `paths` (served paths under the
    same root, of its fan-out directory and its page-group directories): `conversation_file`
    reversed, leaving out the files of other participants whose names begin with its own."""
    prefix = conversation + "."
    for path in paths:
        if path.startswith(prefix) and _FILE_NAME.fullmatch(name := path[len(prefix) :]):
            yield name


def page_group_digits(page_size: int) -> int:
    """Return k: pages are grouped in directories by their start without its last k digits.

    k is the smallest with 10**k a multiple of the page size and at least MIN_PAGES_PER_GROUP
    pages per group, so a directory holds 100 to 1,000 starts of each list and order, however
    long the conversation (page size 50: k = 4, 200 starts a directory).
    """
    k = 0
    while 10**k % page_size or 10**k // page_size < MIN_PAGES_PER_GROUP:
        k += 1
    return k


def page_file(page_size: int, list_name: str, order: str, start: int) -> str:
    """Return the name of a page as a file of its conversation (`conversation_file`).

    `start` 1234550 at page size 50 gives `p123/all.asc.1234550.json`, in the directory
    `ab/cd/4601.p123` (`conversation_file`). The starts below 10**k (the first group) have no
    group directory, `all.asc.0.json`, so that a conversation of a page or a few per list costs
    no directory. The web server derives the same path from the `start` digits.
    """
    digits = str(start)
    group = digits[: -page_group_digits(page_size)]  # k >= 2, so the slice is well defined
    name = f"{list_name}.{order}.{digits}.json"
    return f"p{group}/{name}" if group else name
