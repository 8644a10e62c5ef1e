"""Turn an SMS gateway's message and delivery-report logs into a static conversations API."""

from __future__ import annotations

from importlib.metadata import version

__version__ = version("convsum")
