"""Names to paths: inside the root, one path per name, reachable when the SPEC says so."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convsum.config import LIST_NAMES
from convsum.publish.paths import (
    SUMMARY_FILE,
    conversation_file,
    conversation_files,
    conversation_path,
    fanout,
    is_servable,
    name_segments,
    page_file,
    page_group_digits,
)
from tests.support.names import ODD_NAMES


@pytest.mark.parametrize("name", ODD_NAMES)
def test_paths_odd_name_stays_inside_root(name: str) -> None:
    segments = name_segments(name)
    for segment in segments:
        assert segment not in ("", ".", "..")
        assert "/" not in segment
        assert "\x00" not in segment
        assert len(segment.encode()) <= 255
        assert not any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in segment)
    assert not PurePosixPath(*segments).is_absolute()


def test_paths_distinct_odd_names_never_share_a_path() -> None:
    paths = {name: name_segments(name) for name in ODD_NAMES}
    assert len(set(paths.values())) == len(ODD_NAMES)
    for a, pa in paths.items():
        for b, pb in paths.items():
            if a != b:
                assert pb[: len(pa)] != pa, (a, b)


@pytest.mark.parametrize(
    ("name", "servable"),
    [
        ("46734487112", True),
        ("Shop1", True),
        ("y" * 200, True),
        ("é" * 100, True),
        ("é" * 101, False),
        ("a/b", False),
        ("..", False),
        (".", False),
        ("...", True),
        ("a\x00b", False),
        ("c1\x85", False),
        ("\\", True),
        ("", False),
        ("summary", True),
    ],
)
def test_paths_servable_names(name: str, servable: bool) -> None:
    assert is_servable(name) is servable


@pytest.mark.parametrize(
    ("name", "directories"),
    [
        # The first four hexadecimal digits of `printf %s NAME | md5sum`.
        ("46734487112", ("a9", "a8")),
        ("ip1-100", ("c9", "a8")),
        ("t1-prod", ("f0", "74")),
        ("日本", ("4d", "be")),
    ],
)
def test_paths_fanout_is_the_md5_of_the_bytes(name: str, directories: tuple[str, str]) -> None:
    assert fanout(name) == directories


def test_paths_fanout_bounds_directory_sizes() -> None:
    rng = random.Random(1)
    names = {f"467{rng.randrange(10**8):08d}" for _ in range(200_000)}
    leaves = Counter(fanout(n) for n in names)
    first = Counter(f for f, _ in leaves)
    # 65,536 leaves: 10 million participants put about 150 in each.
    assert len(leaves) <= 65_536 and len(first) == 256
    assert max(leaves.values()) < 10 * len(names) / 65_536
    assert max(first.values()) <= 256


def test_paths_fanout_spreads_names_that_share_their_last_bytes() -> None:
    names = [f"t{n}-prod" for n in range(100_000)]
    leaves = Counter(fanout(n) for n in names)
    first = Counter(f for f, _ in leaves)
    # About 1.5 a leaf: a few at most in any one, where the last four bytes put all in one.
    assert max(leaves.values()) <= 16
    assert max(first.values()) <= 256


def _name_from_segments(segments: tuple[str, ...]) -> str | None:
    """Return the name that `name_segments` mapped to `segments`; None for a hashed name."""
    if segments[0] != "~":
        return segments[-1]
    if segments[-1].startswith("h"):
        return None
    return bytes.fromhex(segments[-1][1:]).decode("utf-8", "surrogatepass")


@given(st.text(max_size=400))
def test_paths_encoding_round_trips(name: str) -> None:
    segments = name_segments(name)
    if segments[0] == "~" and segments[-1].startswith("h"):
        raw = name.encode("utf-8", "surrogatepass")
        assert len(raw) > 100 and _name_from_segments(segments) is None
        assert segments[-1] == "h" + hashlib.sha256(raw).hexdigest()
    else:
        assert _name_from_segments(segments) == name


@pytest.mark.parametrize("size", [101, 2_100, 4_097, 65_536])
@pytest.mark.parametrize("char", ["\x01", "/", "é"])
def test_paths_long_names_have_short_paths(size: int, char: str) -> None:
    name = (char * size)[: size // len(char.encode())]
    path = conversation_file(conversation_path(name, name), "p123/all.desc.1234550.json")
    assert len(path.encode()) < 400
    assert max(len(segment.encode()) for segment in path.split("/")) <= 255


@given(st.text(max_size=300), st.text(max_size=300))
def test_paths_distinct_names_never_nest(a: str, b: str) -> None:
    if a != b:
        sa, sb = name_segments(a), name_segments(b)
        assert sb[: len(sa)] != sa
        assert sa[: len(sb)] != sb


def test_paths_conversation_path_joins_owner_and_participant() -> None:
    assert conversation_path("ip1-100", "46734487112") == (
        "c9/a8/ip1-100/v2/conversations/a9/a8/46734487112"
    )
    assert conversation_file("a/b/4601", "summary.json") == "a/b/4601.summary.json"


# A conversation's files and the names of other participants in its fan-out directory: names
# that extend its own by a `.` and a piece of a file name are the ones that could be mistaken.
FILE_NAMES = st.one_of(
    st.just(SUMMARY_FILE),
    st.builds(
        page_file,
        st.sampled_from([1, 50]),
        st.sampled_from(LIST_NAMES),
        st.sampled_from(["asc", "desc"]),
        st.integers(0, 200_000).map(lambda k: 50 * k),
    ),
)
LEAVES = st.builds(
    "".join,
    st.lists(
        st.sampled_from(["4601", "a", ".", "mt", "asc", "0", "json", "summary", "p1"]), max_size=6
    ),
).filter(lambda leaf: leaf != "")


@st.composite
def two_conversations(draw: st.DrawFn) -> tuple[str, str]:
    """Two participants' leaves: the second often the first, or the first and a `.` and the
    start of a file's name (`4601` and `4601.mt.asc`), whose files begin like the first's."""
    a = draw(LEAVES)
    start = draw(FILE_NAMES).split(".")
    extended = f"{a}.{'.'.join(start[: draw(st.integers(1, len(start)))])}"
    return a, draw(st.sampled_from([a, extended, draw(LEAVES)]))


@given(two_conversations(), FILE_NAMES, FILE_NAMES)
def test_paths_a_conversations_files_are_its_own_and_no_other_participants(
    leaves: tuple[str, str], file_a: str, file_b: str
) -> None:
    a, b = leaves
    path_a, path_b = conversation_file(a, file_a), conversation_file(b, file_b)
    assert (path_a == path_b) == ((a, file_a) == (b, file_b))
    assert list(conversation_files(a, [path_a, path_b])) == (
        [file_a, file_b] if a == b else [file_a]
    )


@pytest.mark.parametrize(
    ("page_size", "start", "path"),
    [
        (50, 0, "mt.asc.0.json"),
        (50, 9950, "mt.asc.9950.json"),
        (50, 10000, "p1/mt.asc.10000.json"),
        (50, 1234550, "p123/mt.asc.1234550.json"),
        (1, 99, "mt.asc.99.json"),
        (1, 100, "p1/mt.asc.100.json"),
    ],
)
def test_paths_page_file_groups_by_leading_digits(page_size: int, start: int, path: str) -> None:
    assert page_file(page_size, "mt", "asc", start) == path


@pytest.mark.parametrize("page_size", [1, 2, 10, 50, 100, 625, 1000, 10000])
def test_paths_page_groups_hold_100_to_1000_starts(page_size: int) -> None:
    per_group = 10 ** page_group_digits(page_size) // page_size
    assert 100 <= per_group <= 1000
