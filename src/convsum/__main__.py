"""Allow ``python -m convsum``."""

from __future__ import annotations

from convsum.cli import cli

cli()
