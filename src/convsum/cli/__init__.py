"""The command line: parse, validate, call one core function; every command ends by one failure
policy (base.py).

The group and what every command shares are in base.py; the commands by what they work on: the
job (job.py: run, sync, nginx-conf, generate), the tables a tree serves (reports.py: query,
report, html) and the API's token store (token_store.py).
"""

from __future__ import annotations

from convsum.cli import job, reports  # noqa: F401  (their commands join the group)
from convsum.cli.base import add_version, cli
from convsum.cli.token_store import tokens

add_version(cli)  # once every command is registered

__all__ = ["cli", "tokens"]
