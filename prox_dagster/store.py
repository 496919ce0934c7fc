"""Where every stage's files live: a local folder or an ``s3://bucket/prefix``, through fsspec.

Layout: ``{base}/{asset}/{shard}.parquet`` (plus the token files and sidecars of
``tokenized_shard``). Locations are plain strings: an absolute local path or a URL. Writes are
atomic on both: a local file is written under a temporary name and renamed; an S3 object is
written locally first and uploaded, in one PUT or (from 100 MiB) in parts that S3 assembles when
the upload completes: either way visible whole or not at all. Shards are read and written a
record batch at a time (``source`` and ``writer``; see ``prox_dagster.parquet_batches``).
S3 settings come from the usual ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for MinIO, moto, R2).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from stat import S_ISREG
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import fsspec
import polars as pl

from . import leases
from .atomic_writes import write_atomic, write_text_atomic
from .parquet_batches import BatchWriter, ParquetSource
from .shards import (ShardError, conflict_error, is_raw_name, key_too_long, near_miss,
                     not_regular, raw_names, select_raw_shards)


def is_remote(location: str | os.PathLike) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def normalize(location: str | os.PathLike) -> str:
    """Local locations become absolute paths; URLs stay as they are (no trailing slash)."""
    return str(location).rstrip("/") if is_remote(location) else str(Path(location).resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def filesystem(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(location)


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.isfile(path)


def sha256(location: str) -> str:
    fs, path = filesystem(location)
    with fs.open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_version(location: str, info: dict | None = None) -> str:
    """A version of a file that changes whenever its content may have: ``{bytes}:{mtime in
    ns}`` locally, ``{bytes}:{ETag}`` on S3 (``info``: the file's listing entry, if at hand)."""
    if info is None and not is_remote(location):
        stat = os.stat(location)
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    if info is None:
        fs, path = filesystem(location)
        info = fs.info(path, refresh=True)
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    return f"{int(info['size'])}:{str(tag).strip(chr(34))}"


def version(location: str) -> dict:
    """Size and :func:`file_version` of a file."""
    v = file_version(location)
    return {"bytes": int(v.split(":", 1)[0]), "version": v}


def list_files(location: str, suffix: str = "") -> dict[str, str]:
    """``{name: file_version}`` of the files directly under a folder or prefix whose names end
    with ``suffix``, in one listing (a folder that does not exist: none)."""
    if not is_remote(location):
        found = {}
        try:
            with os.scandir(location) as entries:
                for entry in entries:
                    name = entry.name
                    if name.endswith(suffix) and entry.is_file(follow_symlinks=False):
                        try:
                            stat = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:  # removed since the listing
                            continue
                        found[name] = f"{stat.st_size}:{stat.st_mtime_ns}"
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return found
    fs, root = filesystem(location)
    try:
        listing = fs.ls(root, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    return {entry["name"].rsplit("/", 1)[-1]: file_version("", entry) for entry in listing
            if entry.get("type") == "file" and entry["name"].endswith(suffix)}


def content_id(location: str) -> str:
    """What identifies a file's content in input fingerprints: the sha256 of a local file, the
    ETag and size of an S3 object (no download; an ETag changes when the content does)."""
    if not is_remote(location):
        return sha256(location)
    size, _, tag = file_version(location).partition(":")
    return f"etag:{tag}:{size}"


def local_file_record(path: Path, location: str) -> dict:
    return {"name": location.rsplit("/", 1)[-1], "bytes": path.stat().st_size,
            "sha256": sha256(str(path))}


class RawEntry(NamedTuple):
    """A raw shard file from a listing: where it is, its :func:`file_version`, and when it was
    last modified (ns; for registering files oldest first)."""

    location: str
    version: str
    modified: int


def list_raw_shards(location: str, patterns: list[str] | None = None
                    ) -> tuple[dict[str, RawEntry], dict[str, str]]:
    """Raw shard files directly under ``location`` (folder or ``s3://`` prefix) by partition
    key, from one listing; and the keys that are refused, with why (never registered or read):
    two files for one key, or a name that is not a regular file (a link, a folder, a FIFO, a
    device: nothing of it is read); and, under ``"/" + file name``, the files that look like
    crawl data in another case or format."""
    if not is_remote(location):
        try:
            with os.scandir(location) as listing:  # types from the listing, a stat per shard
                entries = {entry.name: entry for entry in listing}
        except (FileNotFoundError, NotADirectoryError):
            return {}, {}
        files, conflicts = select_raw_shards(entries, patterns)
        refused = {key: str(conflict_error(key, names, location))
                   for key, names in conflicts.items()}
        refused.update(_near_misses(entries))
        found = {}
        for key, name in files.items():
            if (too_long := key_too_long(key)) is not None:
                refused[key] = too_long
                continue
            try:
                stat = entries[name].stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since the listing
                continue
            if not S_ISREG(stat.st_mode):
                refused[key] = str(not_regular(key, join(location, name), stat.st_mode))
                continue
            found[key] = RawEntry(join(location, name), f"{stat.st_size}:{stat.st_mtime_ns}",
                                  stat.st_mtime_ns)
        return found, refused
    fs, root = filesystem(location)
    try:
        listing = fs.ls(root, detail=True, refresh=True)
    except FileNotFoundError:
        return {}, {}
    entries = {e["name"].rsplit("/", 1)[-1]: e for e in listing if e.get("type") == "file"}
    found, refused = {}, {}
    files, conflicts = select_raw_shards(entries, patterns)
    for key, name in files.items():
        if (too_long := key_too_long(key)) is not None:
            refused[key] = too_long
            continue
        modified = entries[name].get("LastModified")
        found[key] = RawEntry(join(location, name), file_version("", entries[name]),
                              int(modified.timestamp() * 1e9) if modified is not None else 0)
    return found, {**_near_misses(entries), **refused,
                   **{key: str(conflict_error(key, names, location))
                      for key, names in conflicts.items()}}


NEAR_MISS = "/"  # leads a near miss's file name among refused keys: no shard key holds a "/"


def _near_misses(names) -> dict[str, str]:
    """``{"/" + file name: why it is not read}`` for the names that look like crawl data (the
    "/" keeps ``x.JSONL`` apart from the shard of ``x.JSONL.jsonl``)."""
    return {f"{NEAR_MISS}{name}": why for name in names if (why := near_miss(name)) is not None}


def locate_raw_shard(location: str, shard: str, patterns: list[str] | None = None) -> str:
    """The raw file of one shard under ``location``, found with one existence check per raw
    format (never a listing of the whole prefix: a backfill of N shards costs O(N) requests,
    not O(N²)). No file, two files for the key, a name that is not a regular file (a link out
    of the folder, a FIFO), or a key too long for its files' names is an error naming them."""
    if (too_long := key_too_long(shard)) is not None:
        raise ShardError(too_long)
    if is_remote(location):
        names = [name for name in raw_names(shard)
                 if is_raw_name(name, patterns) and exists(join(location, name))]
    else:
        names = []
        for name in raw_names(shard):
            if not is_raw_name(name, patterns):
                continue
            try:
                mode = os.lstat(join(location, name)).st_mode
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not S_ISREG(mode):
                raise not_regular(shard, join(location, name), mode)
            names.append(name)
    if len(names) > 1:
        raise conflict_error(shard, names, location)
    if not names:
        raise ShardError(f"shard {shard!r}: no raw file for it in {location!r}"
                         + (f" matching {patterns}" if patterns else ""))
    return join(location, names[0])


@contextlib.contextmanager
def local_copy(location: str) -> Iterator[Path]:
    """A local file with the content of ``location``: the file itself, or a temporary download
    (readers of compressed JSON lines want a real file)."""
    if not is_remote(location):
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="prox-raw-") as folder:
        local = Path(folder) / location.rsplit("/", 1)[-1]
        fs, path = filesystem(location)
        fs.get_file(path, str(local))
        yield local


class ShardStore:
    """Shards of every asset under ``base`` (a folder or an ``s3://`` URL)."""

    def __init__(self, base: str | os.PathLike):
        self.base = normalize(base)
        self.remote = is_remote(self.base)

    def location(self, *parts: str) -> str:
        return join(self.base, *parts)

    def path(self, asset: str, shard: str, suffix: str = ".parquet") -> str:
        return self.location(asset, f"{shard}{suffix}")

    def exists(self, asset: str, shard: str) -> bool:
        return exists(self.path(asset, shard))

    def open(self, location: str, mode: str = "rb"):
        fs, path = filesystem(location)
        return fs.open(path, mode)

    def read(self, asset: str, shard: str, columns: list[str] | None = None) -> pl.DataFrame:
        location = self.path(asset, shard)
        if not exists(location):
            raise ShardError(f"shard {shard!r}: {asset} has no output at {location!r}; "
                             f"materialize {asset} for this shard first")
        with self.open(location) as f:
            return pl.read_parquet(f, columns=columns)

    def source(self, asset: str, shard: str) -> ParquetSource:
        """The stored shard as a source of record batches (see ``prox_dagster.pipeline``)."""
        location = self.path(asset, shard)
        if not exists(location):
            raise ShardError(f"shard {shard!r}: {asset} has no output at {location!r}; "
                             f"materialize {asset} for this shard first")
        try:
            return ParquetSource(lambda: self.open(location))
        except OSError as exc:
            raise ShardError(f"shard {shard!r}: cannot read {asset} at {location!r}: {exc}") \
                from exc

    @contextlib.contextmanager
    def writer(self, asset: str, shard: str, schema: dict[str, pl.DataType] | None = None, *,
               keep_empty: bool = True) -> Iterator[BatchWriter]:
        """A :class:`BatchWriter` for the shard's file: it appears (whole) when the block ends
        without an exception; ``writer.record`` then holds its name, bytes and sha256. With
        ``keep_empty=False`` no rows write no file, and remove the one an earlier write left
        (``writer.record`` stays None)."""
        location = self.path(asset, shard)
        with self._staged(location) as local:
            with BatchWriter(local, schema, keep_empty=keep_empty) as writer:
                yield writer
            if writer.rows or keep_empty:
                writer.record = local_file_record(local, location)
        if not (writer.rows or keep_empty):
            self.remove(location)

    def write(self, frame: pl.DataFrame, asset: str, shard: str) -> dict:
        """Write atomically; returns the file's record (name, bytes, sha256)."""
        with self.writer(asset, shard, frame.schema) as writer:
            writer.write(frame)
        return writer.record

    def write_text(self, text: str, *parts: str) -> str:
        location = self.location(*parts)
        with self._staged(location) as local:
            write_text_atomic(text, local)
        return location

    def write_bytes(self, data: bytes, *parts: str) -> str:
        location = self.location(*parts)
        with self._staged(location) as local:
            write_atomic(local, lambda tmp: tmp.write_bytes(data))
        return location

    def read_bytes(self, location: str) -> bytes:
        """A whole (small) file: a sidecar, a manifest. Local files skip fsspec, whose
        per-call cost is most of reading a thousand sidecars."""
        if not is_remote(location):
            with open(location, "rb") as f:
                return f.read()
        fs, path = filesystem(location)
        return fs.cat_file(path)

    def read_text(self, location: str) -> str:
        with self.open(location) as f:
            return f.read().decode("utf-8")

    @contextlib.contextmanager
    def staging_dir(self, asset: str) -> Iterator[Path]:
        """A local folder for writers that make several files (token files): the asset's own
        folder when local; a temporary one to :meth:`publish` from when remote."""
        if not self.remote:
            folder = Path(self.location(asset))
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        # the asset may be a path ("pretraining_set/litgpt-..."): a slash in the prefix
        # would name a folder that does not exist
        with tempfile.TemporaryDirectory(prefix=f"prox-{asset.replace('/', '-')}-") as folder:
            yield Path(folder)

    def publish(self, asset: str, files: list[Path]) -> list[dict]:
        """Records of ``files`` written in :meth:`staging_dir`; when remote, each is uploaded
        and then removed from the staging folder (a writer may publish as it goes)."""
        records = []
        for path in files:
            location = self.location(asset, path.name)
            records.append(local_file_record(path, location))
            if self.remote:
                fs, target = filesystem(location)
                fs.put_file(str(path), target)
                path.unlink()
        return records

    def remove(self, location: str) -> None:
        fs, path = filesystem(location)
        if fs.isfile(path):
            fs.rm_file(path)

    @contextlib.contextmanager
    def lease(self, asset: str, shard: str, owner: str, *, wait_s: float = 6 * 3600,
              poll_s: float = 1.0, waiting: Callable[[str], None] | None = None,
              heartbeat_s: float = leases.HEARTBEAT_S) -> Iterator[leases.Lease]:
        """Hold the lease on computing ``asset`` for ``shard`` (``prox_dagster.leases``): a
        live holder is waited for (``waiting(holder)`` is told once), at most ``wait_s``
        seconds; one that is provably gone is taken over."""
        location = self.lease_location(asset, shard)
        what = f"shard {shard!r}: {asset}"
        try:
            if not self.remote:
                with leases.local_lease(Path(location), owner, wait_s=wait_s, poll_s=poll_s,
                                        waiting=waiting, what=what,
                                        heartbeat_s=heartbeat_s) as held:
                    yield held
            else:
                fs, path = filesystem(location)
                with leases.s3_lease(fs, path, owner, wait_s=wait_s, poll_s=poll_s,
                                     waiting=waiting, what=what,
                                     heartbeat_s=heartbeat_s) as held:
                    yield held
        except leases.LeaseError as exc:
            raise ShardError(str(exc)) from exc

    def lease_location(self, asset: str, shard: str) -> str:
        return self.location(".leases", asset, f"{shard}.lock")

    @contextlib.contextmanager
    def _staged(self, location: str) -> Iterator[Path]:
        if not self.remote:
            yield Path(location)
            return
        with tempfile.TemporaryDirectory(prefix="prox-upload-") as folder:
            local = Path(folder) / location.rsplit("/", 1)[-1]
            yield local
            if local.exists():  # a writer that kept no empty file wrote none
                fs, target = filesystem(location)
                fs.put_file(str(local), target)
