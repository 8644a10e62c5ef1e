"""Free loopback ports and waiting for a server to listen on one (the tests' servers, the
benchmarks')."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any


def listening(port: int, process: subprocess.Popen[Any], seconds: float) -> bool:
    """Wait until `process` listens on the loopback `port`; False if it ends or takes longer."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on (for a server to start on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
