"""What messages call a send of the store: `send-<id>-<slug>@<destination>`, in the place of
an embedded ledger's file name (`--continue-from` takes it), and the worker id of a sender."""

from __future__ import annotations

import functools
import os
import re
import socket
import time
from pathlib import Path

_NAME = re.compile(r"^send-(\d+)-")


def send_name(send_id: int, slug: str, destination: str) -> Path:
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", destination).strip("-")[:40]
    return Path(f"send-{send_id}-{slug}@{readable}")


def send_id_of(name: Path) -> int:
    """The id in a name made by send_name; 0 for any other name (no send has it)."""
    found = _NAME.match(name.name)
    return int(found.group(1)) if found else 0


def worker_id() -> str:
    """This process as a sender: host, pid and start time (a pid is reused, the three not)."""
    return _worker(os.getpid())


@functools.cache
def _worker(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{time.strftime('%Y%m%dT%H%M%S')}"
