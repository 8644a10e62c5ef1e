"""Turn an SMS gateway's message and delivery-report logs into a static conversations API."""

from __future__ import annotations

# The one place the version is written: the package's metadata takes it from here
# (pyproject.toml), so that reading it costs no metadata lookup at every start.
__version__ = "0.4.0"
