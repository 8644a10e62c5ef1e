"""The installed `convsum` run as a process, and the stages its runs log (to stop it at)."""

from __future__ import annotations

import sys
from pathlib import Path

BIN = Path(sys.executable).parent
CONVSUM = str(BIN / "convsum")

# Stages of an incremental run, in order; "swap" renames files into the served tree and "state"
# commits the catalog.
INCREMENTAL_STAGES = (
    "read", "plan", "derive", "pages", "summaries", "tables", "swap", "index", "state"
)  # fmt: skip
