"""Local files that a user or another file names (a raw shard, a labelled set, a model file):
opened only when they are regular files, so that a FIFO cannot stall a step, a device cannot
feed it forever, and a link cannot carry a secret or a file from elsewhere into the data."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """A name that is not a regular file where one is read (nothing of it was read)."""


def kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words."""
    return ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")


def open_regular(path: str | os.PathLike, what: str, *, follow_links: bool = False,
                 inside: str | os.PathLike | None = None) -> BinaryIO:
    """``path`` opened for reading if it is a regular file; else :class:`NotRegularFile`
    naming ``what`` and the path, without a byte of it read. The check and the open are one
    step (``O_NOFOLLOW`` unless ``follow_links``, then ``fstat`` of what was opened), so
    nothing can swap the file between them. ``inside``: a folder the file must resolve into
    (a link out of it is refused even when links are followed)."""
    path = Path(path)
    if inside is not None and follow_links:
        root = Path(inside).resolve()
        if not path.resolve().is_relative_to(root):
            raise NotRegularFile(f"{what} {str(path)!r} resolves to {str(path.resolve())!r}, "
                                 f"outside {str(root)!r}: nothing of it was read")
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno != errno.ELOOP or follow_links:
            raise
        raise NotRegularFile(_refusal(what, path, stat.S_IFLNK)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(_refusal(what, path, mode))
    os.set_blocking(fd, True)  # O_NONBLOCK was for the open alone (a FIFO opens at once)
    return os.fdopen(fd, "rb")


def _refusal(what: str, path: Path, mode: int) -> str:
    return (f"{what} {str(path)!r} is {kind(mode)}: only regular files are read (nothing of it "
            "was read)")


def read_regular(path: str | os.PathLike, what: str, limit: int, **options) -> bytes:
    """A whole regular file (see :func:`open_regular`) of at most ``limit`` bytes; a larger one
    is refused by name, with its size, before it is read."""
    with open_regular(path, what, **options) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise NotRegularFile(f"{what} {str(path)!r} holds {size:,} bytes, over the "
                                 f"{limit:,}-byte limit for it: nothing of it was read")
        return f.read(limit + 1)[:limit]
