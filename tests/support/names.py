"""Awkward names and hostile paths: owner and participant names of every kind, any name one URL
path segment can hold, and request paths that try to cross from one owner's tree into another's,
each with the JSON error the generated nginx configuration answers it with."""

from __future__ import annotations

from hypothesis import strategies as st

from convsum.publish.paths import is_servable

ODD_NAMES = [
    "../../etc/passwd",
    "a/b",
    "/",
    "..",
    ".",
    "...",
    "a\x00b",
    "\x00",
    "tab\there",
    "new\nline",
    "del\x7f",
    "c1\x85",
    "\\",
    "a\\..\\b",
    "x" * 300,
    "é" * 100,
    "y" * 200,
    "日本語の送信者",
    "emoji😀",
    "summary",
    "mt",
    "mo",
    "all",
    "index.json",
    "summary.json",
    "v2",
    "~",
    "__",
    "_",
    "",
    " ",
    "%2e%2e",
    "a?b#c",
    "$uri",
    "46734487112",
    "Shop1",
    # Text that looks percent-encoded, or that URL decoders treat apart.
    "%41%2F",
    "100%",
    "%zz",
    "a+b c",
    "a;b=c",
    # 200 bytes, the longest servable: of 4-byte UTF-8, and of what a client sends as %25.
    "😀" * 50,
    "%" * 200,
    "rtl\u202eoverride\ufeff",
    # Names that share their last four bytes (and once shared a fan-out directory).
    "t1-prod",
    "t2-prod",
    "x-prod",
]


# Any name one URL path segment can hold: short ones of any characters, long ones up to the
# 200-byte limit, and ones made of what URL decoders treat apart.
def _in_a_segment(max_codepoint: int | None = None) -> st.SearchStrategy[str]:
    return st.characters(
        max_codepoint=max_codepoint, exclude_categories=("Cc", "Cs"), exclude_characters="/"
    )


SERVABLE_NAMES = st.one_of(
    st.text(_in_a_segment(), min_size=1, max_size=50),  # 4 bytes a character at most
    st.text(_in_a_segment(0x7F), min_size=150, max_size=200),
    st.text("%+;=&?#\\ .~-_aé😀", min_size=1, max_size=50),
).filter(is_servable)


# The JSON errors of the generated configuration that the hostile paths meet.
HOSTILE = {
    "status": 400,
    "error": "Bad Request",
    "message": "the path must not hold a dot segment or an encoded slash",
}
MALFORMED = {"status": 400, "error": "Bad Request", "message": "malformed request"}
NO_ROUTE = {"status": 404, "error": "Not Found", "message": "no such endpoint"}
UNKNOWN = {"status": 404, "error": "Not Found", "message": "unknown participant"}

SUMMARY = "v2/conversations/46700000001/summary"
# (path template, status, body): `{a}` is the owner a proxy put first, `{b}` the other owner.
TRAVERSALS = [
    ("/{a}/../{b}/" + SUMMARY, HOSTILE),
    ("/{a}/./../{b}/" + SUMMARY, HOSTILE),
    ("/{a}//../{b}/" + SUMMARY, HOSTILE),
    ("/{a}/..%2F{b}/" + SUMMARY, HOSTILE),
    ("/{a}/..%2f{b}/" + SUMMARY, HOSTILE),
    ("/{a}%2F..%2F{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%2e%2e/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%2E%2e/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/.%2E/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%2e./{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%2e%2e%2f{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%2e/../{b}/" + SUMMARY, HOSTILE),
    ("/{a}/v2/../../{b}/" + SUMMARY, HOSTILE),
    ("/{a}/v2/conversations/..%2F..%2F..%2F{b}%2F" + SUMMARY, HOSTILE),
    ("/{a}/" + SUMMARY + "/../../../../../{b}/" + SUMMARY, HOSTILE),
    ("/{a}/" + SUMMARY + "/%2e%2e", HOSTILE),
    ("/{a}/..?/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/..#/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%c0%ae%c0%ae/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%C0%AE./{b}/" + SUMMARY, HOSTILE),
    ("/{a}/..%c0%af{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%e0%80%ae%e0%80%ae/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/%f0%80%80%ae%f0%80%80%ae/{b}/" + SUMMARY, HOSTILE),
    ("/{a}/..%00/{b}/" + SUMMARY, MALFORMED),
    ("/{a}/%u002e%u002e/{b}/" + SUMMARY, MALFORMED),
    # Spellings only other servers normalise: to nginx each is a literal name, so the path has
    # the wrong shape (no route) or names an owner that does not exist.
    ("/{a}/%252e%252e/{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/%252e%252e%252f{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/..%252f{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/..;/{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/..%3B/{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/.../{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/%ef%bc%8e%ef%bc%8e/{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/..\\{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/..%5C{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}/%2e%2e%5c{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}\\..\\{b}/" + SUMMARY, UNKNOWN),
    ("/{a}%5C..%5C{b}/" + SUMMARY, UNKNOWN),
    ("/{a}/{b}/" + SUMMARY, NO_ROUTE),
    ("/{a}//{b}/" + SUMMARY, NO_ROUTE),
    ("//{b}/" + SUMMARY, NO_ROUTE),
]
