"""The nginx configuration's pieces that can be checked without a server."""

from __future__ import annotations

import re

import pytest

from convsum.config import ALIGNMENT_MODULUS
from convsum.publish.nginx import start_pattern

PAGE_SIZES = [d for d in range(1, ALIGNMENT_MODULUS + 1) if ALIGNMENT_MODULUS % d == 0]


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_nginx_start_pattern_matches_exactly_the_multiples(page_size: int) -> None:
    pattern = re.compile(start_pattern(page_size))
    for n in [*range(0, 3 * ALIGNMENT_MODULUS + 7), 10**12, 10**12 + page_size, 10**12 + 1]:
        assert bool(pattern.match(str(n))) == (n % page_size == 0), n


@pytest.mark.parametrize("text", ["", "-50", "050", "00", "5e1", "50 ", "+50", "50.0", "abc"])
def test_nginx_start_pattern_rejects_non_canonical_numbers(text: str) -> None:
    assert not re.match(start_pattern(50), text)
