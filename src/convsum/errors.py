"""Errors that reach the user as one clear line and an exit code.

The exit code of each is its class's `exit_code`: the command line's one table from failure to
exit code (cli/base.py applies it to every command).
"""

from __future__ import annotations

from typing import ClassVar


class ConvsumError(Exception):
    """Base class: anything the user can fix in their input or configuration (exit code 1)."""

    exit_code: ClassVar[int] = 1


class ConfigError(ConvsumError):
    """The configuration file or a setting in it is unusable."""


class MissingExtraError(ConfigError):
    """A command, option or engine needs an optional extra that is not installed (extras.py)."""

    exit_code = 2


class InputError(ConvsumError):
    """An input path cannot be found, opened or read."""


class InputSchemaError(InputError):
    """An input lacks a required column or has a column of the wrong type."""


class InputValueError(InputError):
    """An input column holds a value the contract does not allow (null id, unknown direction)."""


class PublishError(ConvsumError):
    """The output root cannot be prepared or published."""


class EngineError(ConvsumError):
    """The engine could not compute: a cluster, or one of its executors, failed."""


class SyncError(ConvsumError):
    """A sync to an object store failed: a request was refused, or the store is unreachable."""


class RunLockedError(ConvsumError):
    """Another run is writing the same output root: try again later."""

    exit_code = 75  # EX_TEMPFAIL


class TokenError(ConvsumError):
    """The token store cannot be read or changed as asked (a malformed line, an unknown id)."""


class QueryError(ConvsumError):
    """A query or report cannot run as asked (refused, or not valid SQL): a usage error."""

    exit_code = 2


class RebuildRefusedError(ConvsumError):
    """The state cannot be added to, and the configuration forbids a full rebuild."""


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message, or its type name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
