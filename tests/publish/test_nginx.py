"""The nginx configuration's pieces that can be checked without a server."""

from __future__ import annotations

import re

import pytest

from convsum.config import ALIGNMENT_MODULUS
from convsum.publish.nginx import page_group_pattern, start_pattern
from convsum.publish.paths import page_file

PAGE_SIZES = [d for d in range(1, ALIGNMENT_MODULUS + 1) if ALIGNMENT_MODULUS % d == 0]


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_nginx_start_pattern_matches_exactly_the_multiples(page_size: int) -> None:
    pattern = re.compile(start_pattern(page_size))
    for n in [*range(0, 3 * ALIGNMENT_MODULUS + 7), 10**12, 10**12 + page_size, 10**12 + 1]:
        assert bool(pattern.match(str(n))) == (n % page_size == 0), n


@pytest.mark.parametrize("text", ["", "-50", "050", "00", "5e1", "50 ", "+50", "50.0", "abc"])
def test_nginx_start_pattern_rejects_non_canonical_numbers(text: str) -> None:
    assert not re.match(start_pattern(50), text)


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_nginx_page_group_agrees_with_page_file(page_size: int) -> None:
    pattern = re.compile(page_group_pattern(page_size))
    for start in [
        0,
        page_size,
        10 * page_size,
        99 * page_size,
        100 * page_size,
        10**7,
        10**9 + page_size,
    ]:
        if start % page_size:
            continue
        match = pattern.match(str(start))
        group = match.group(1) if match else ""
        assert page_file(page_size, "all", "asc", start) == f"p{group}/all.asc.{start}.json"
