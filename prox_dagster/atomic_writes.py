"""Atomic writes of local files: a temp file beside the target, then a rename, so a crash leaves
the previous file or none, never a partial one; what killed writers left behind is swept."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path

from .leases import process_alive

STALE_TEMP_SECONDS = 600  # a temp file untouched this long has no live writer
SWEEP_SECONDS = 60
_TEMP_NAME = re.compile(r"^\..*\.[0-9a-f]{12}\.(?P<host>[^.]+)-(?P<pid>[0-9]+)\.[^.]+\.tmp$")
_swept: dict[Path, float] = {}  # folder -> when this process last swept it
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def write_atomic(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous file (if any) untouched and no partial file under the
    final name. The temp file's name stays short whatever ``path``'s (a legal 240-character
    shard name must not fail on it) and says which target, host and process it belongs to, so
    a later write in the same folder removes what a killed writer left: at once when that
    process is gone from this host, else once it is :data:`STALE_TEMP_SECONDS` old. A process
    sweeps a folder at most once per :data:`SWEEP_SECONDS` (sweeping on every write cost a
    listing of the folder per shard: quadratic over a backfill).
    """
    path = Path(path)
    tmp = temp_file(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def temp_file(path: Path) -> Path:
    """A new, empty temporary file beside ``path`` for a write that ends in a rename to
    ``path`` (see :func:`write_atomic`); what killed writers of ``path`` left is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = _temp_prefix(path.name)
    now = time.monotonic()
    if now - _swept.get(path.parent, -SWEEP_SECONDS) >= SWEEP_SECONDS:
        if len(_swept) > 4096:
            _swept.clear()
        _remove_stale_temps(path.parent)
        _swept[path.parent] = now
    while True:
        tmp = path.parent / f"{prefix}{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            # mode 0o666 under the umask, as for any new file: mkstemp's 0o600 made every shard,
            # manifest and model unreadable to the team's other users and services
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def _temp_prefix(name: str) -> str:
    # the name's start for people, a hash of all of it so two long names never share temps
    return f".{name[:48]}.{hashlib.sha256(name.encode()).hexdigest()[:12]}."


def _remove_stale_temps(folder: Path) -> None:
    now = time.time()
    for candidate in folder.glob(".*.tmp"):
        match = _TEMP_NAME.match(candidate.name)
        if match is None:
            continue  # not a temp file of ours
        host, pid = match["host"], match["pid"]
        try:
            # this process's own temps may belong to a write in flight in another thread
            dead = host == _HOST and int(pid) != os.getpid() and not process_alive(int(pid))
            if dead or now - candidate.stat().st_mtime > STALE_TEMP_SECONDS:
                candidate.unlink()
        except FileNotFoundError:  # its writer finished (renamed) or another cleaner won
            continue


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
