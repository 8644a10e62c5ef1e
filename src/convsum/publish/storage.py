"""How a tree stores its served files: as they are served, or gzip-compressed.

A file served as `PATH` (the paths of publish/paths.py, and of `files.txt`) is stored as `PATH`,
or, in a gzip tree, only as `PATH.gz`: nginx's gzip_static sends it to a client that accepts gzip
as it is and its gunzip filter decodes it for every other, and a bucket holds it under `PATH`
with `Content-Encoding: gzip`. Either way a client receives the same bytes once decoded.

The compression is ISA-L's gzip at its fastest level (`isal`: about 140,000 pages a second on
one core here, against zlib's 70,000 at its own fastest, for a slightly smaller result), with no
name and a zero modification time in the header, so the same page always has the same bytes.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

from isal import igzip

GZIP_SUFFIX = ".gz"
_LEVEL = 1


@dataclass(frozen=True)
class Storage:
    """The storage of a tree's served files: gzip-compressed (`gzip`) or as they are."""

    gzip: bool = False

    @property
    def suffix(self) -> str:
        """What a served path gains as a stored one."""
        return GZIP_SUFFIX if self.gzip else ""

    @property
    def content_encoding(self) -> str | None:
        """The Content-Encoding of a stored file as HTTP sends it (None: the JSON itself)."""
        return "gzip" if self.gzip else None

    def stored(self, path: str) -> str:
        """Return the stored path of a served one."""
        return path + self.suffix

    def encode(self, body: bytes) -> bytes:
        """Return the stored bytes of a served body."""
        return igzip.compress(body, _LEVEL, mtime=0) if self.gzip else body

    def decode(self, stored: bytes) -> bytes:
        """Return the served body of stored bytes."""
        return gzip.decompress(stored) if self.gzip else stored

    def served(self, stored_name: str) -> str:
        """Return the served path of a stored one."""
        return stored_name.removesuffix(self.suffix)


def storage_of(layout: dict[str, object]) -> Storage:
    """Return the storage a manifest's layout records (none recorded: as served)."""
    return Storage(gzip=layout.get("gzip") is True)
