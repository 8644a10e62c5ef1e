"""Flush to disk what a publication depends on, before the step that makes it visible.

A rename is atomic for readers, but after a power loss the disk may hold the rename and not the
file's data, or the data and not the rename. So the publishers flush in this order: the new files
(one `syncfs(2)` of their file system: a tree is many small files, and one call costs less than
an `fsync` each), then the rename that makes them visible, then the directory that holds it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Write every dirty page of the file system holding `path` to disk (`syncfs(2)`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:  # since Linux 5.8 it reports write-back errors too
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


def sync_file(path: Path) -> None:
    """Write one file's data to disk (`fsync(2)`), before a rename puts it in place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(path: Path) -> None:
    """Make the entries of directory `path` (a rename into it) durable (`fsync(2)`)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
