"""A stage's output for one shard: written, audited, then published or kept as failed.

Files are written into a staging folder, then moved into ``{asset}/`` (published) or, when a
blocking check failed, ``{asset}/failed/``; the sidecar (``{shard}.provenance.json``) is written
after the files it lists, by the holder of the shard's lease, so no reader takes a half-written
output for a whole one. Each file is recorded with its sha256 and its version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from .fingerprint import (FAILED, SIDECAR_SUFFIX, Freshness, Record, StageSettings, judge_stage)
from .parquet_batches import BatchWriter
from .stages import RAW_INPUT, STAGE_INPUTS, upstream
from .store import ShardStore, content_id, file_version, filesystem, sha256

PUBLISHED = "published"
KINDS = (PUBLISHED, FAILED)


def folder(store: ShardStore, stage: str, kind: str) -> str:
    return store.location(stage) if kind == PUBLISHED else store.location(stage, FAILED)


def sidecar_location(store: ShardStore, stage: str, shard: str, kind: str = PUBLISHED) -> str:
    return f"{folder(store, stage, kind)}/{shard}{SIDECAR_SUFFIX}"


def file_location(store: ShardStore, record: Record, name: str) -> str:
    return f"{folder(store, record.stage, record.kind)}/{name}"


def parse_record(stage: str, shard: str, kind: str, text: str | bytes) -> Record | None:
    """A sidecar's record, or None when it is not one (cut short, another format): such an
    output is treated as never written, and computed again."""
    try:
        data = orjson.loads(text)  # an audit parses every sidecar of the store: 5x json's speed
    except (orjson.JSONDecodeError, UnicodeDecodeError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), str) \
            or not isinstance(data.get("files"), list) \
            or not all(isinstance(f, dict) and {"name", "sha256"} <= set(f) for f in data["files"]):
        return None
    return Record(stage, shard, kind, data)


def read_record(store: ShardStore, stage: str, shard: str, kind: str = PUBLISHED,
                warn: Callable[[str], None] | None = None) -> Record | None:
    """The sidecar's record; None when there is none, or (said to ``warn``) when it cannot be
    read: the output is then treated as missing and computed again."""
    location = sidecar_location(store, stage, shard, kind)
    try:
        record = parse_record(stage, shard, kind, store.read_bytes(location))
    except (FileNotFoundError, IsADirectoryError):
        return None
    if record is None and warn:
        warn(unreadable_sidecar(location))
    return record


def unreadable_sidecar(location: str) -> str:
    return (f"sidecar {location} is unreadable or of another format: its output is treated as "
            "missing and computed again")


def intact(store: ShardStore, record: Record) -> bool:
    """Whether every file ``record`` lists is what its writer wrote: the same version, or (a
    copied store, a touched file) the same sha256."""
    for entry in record.files:
        location = file_location(store, record, entry["name"])
        try:
            now = file_version(location)
        except (FileNotFoundError, OSError):
            return False
        if now != entry.get("version") and sha256(location) != entry["sha256"]:
            return False
    return True


@dataclass(frozen=True)
class RawFile:
    """A shard's crawl file and its version (from a listing, or a stat of it)."""

    location: str
    version: str

    @classmethod
    def at(cls, location: str) -> "RawFile":
        return cls(location, file_version(location))


def raw_content_id(raw: RawFile, records: list[Record | None]) -> str:
    """The crawl file's content id: the one a raw shard's writer recorded for this version of
    the file, else hashed now (a new or changed file)."""
    for record in records:
        seen = (record.data.get("raw_file") or {}) if record else {}
        if seen.get("version") == raw.version and seen.get("content_id"):
            return seen["content_id"]
    return content_id(raw.location)


def input_ids(store: ShardStore, stage: str, shard: str, raw: RawFile | None,
              own: list[Record | None]) -> tuple[dict[str, str], list[str]]:
    """The content ids of ``stage``'s inputs for ``shard`` (an upstream stage's: its published
    output's, as its writer recorded them) and the names of those that do not exist."""
    ids, absent = {}, []
    for name in STAGE_INPUTS[stage]:
        if name == RAW_INPUT:
            if raw is None:
                absent.append(RAW_INPUT)
            else:
                ids[name] = raw_content_id(raw, own)
            continue
        upstream = read_record(store, name, shard)
        if upstream is None or not intact(store, upstream):
            absent.append(name)
        else:
            ids[name] = upstream.data_id
    return ids, absent


def freshness(store: ShardStore, expected: StageSettings, shard: str,
              raw: RawFile | None = None, warn: Callable[[str], None] | None = None
              ) -> Freshness:
    """One stage of one shard against the current inputs and settings, read from the store
    (``raw``: the crawl file, for the raw shard)."""
    published = read_record(store, expected.stage, shard, warn=warn)
    failed = read_record(store, expected.stage, shard, FAILED, warn=warn)
    inputs, absent = input_ids(store, expected.stage, shard, raw, [published, failed])
    return judge_stage(expected, shard, published, failed, inputs, absent,
                       lambda record: intact(store, record))


def shard_freshness(store: ShardStore, shard: str, expected: dict[str, StageSettings],
                    raw: RawFile | None) -> dict[str, Freshness]:
    """Every stage of ``shard``, in graph order (``raw`` None: its crawl file is gone)."""
    return {stage: freshness(store, settings, shard, raw if stage == "raw_shard" else None)
            for stage, settings in expected.items()}


def stale_upstream(store: ShardStore, stage: str, shard: str,
                   expected: dict[str, StageSettings]) -> list[Freshness]:
    """Ancestors of ``stage`` (the crawl file aside) that are not current: computing ``stage``
    from them would mix outputs of different inputs or settings (e.g. chunk programs written
    for an earlier doc decision)."""
    seen: dict[str, Freshness] = {}
    pending = upstream(stage)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name == "raw_shard":
            seen[name] = None  # its crawl file is read by the raw stage alone
        else:
            seen[name] = freshness(store, expected[name], shard)
        pending.extend(upstream(name))
    return [f for f in seen.values() if f is not None and not f.current]


class Staging:
    """Where a stage writes one shard's new files before they are judged: a folder of its own
    beside the asset's (locally, so that publishing is a rename) or a temporary folder (for S3,
    uploaded when committed). Only the lease holder stages a shard, so what a killed writer
    left there is removed at once."""

    def __init__(self, store: ShardStore, stage: str, shard: str):
        self.store, self.stage, self.shard = store, stage, shard
        self._tmp: str | None = None
        if store.remote:
            self._tmp = tempfile.mkdtemp(prefix=f"prox-{stage}-")
            self.folder = Path(self._tmp)
        else:
            self.folder = Path(store.location(stage, ".staging", shard))
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)

    @contextlib.contextmanager
    def writer(self, schema: dict[str, pl.DataType] | None = None) -> Iterator[BatchWriter]:
        """A :class:`BatchWriter` of the shard's Parquet file in the staging folder."""
        with BatchWriter(self.folder / f"{self.shard}.parquet", schema) as writer:
            yield writer

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file()
                      and not p.name.startswith("."))

    def commit(self, data: dict, passed: bool) -> Record:
        """Move the staged files into the published folder (``passed``) or the failed one, with
        a sidecar holding ``data`` and the files' records; returns the record."""
        kind = PUBLISHED if passed else FAILED
        staged = {path.name: path for path in self.files()}
        record = Record(self.stage, self.shard, kind, {**data, "files": [
            {"name": name, "bytes": path.stat().st_size, "sha256": sha256(str(path))}
            for name, path in staged.items()]})
        previous = read_record(self.store, self.stage, self.shard, kind)
        for entry in record.files:
            entry["version"] = _place(self.store, staged[entry["name"]],
                                      file_location(self.store, record, entry["name"]))
        _write_sidecar(self.store, record)
        _remove_unlisted(self.store, previous, record)
        if passed:
            discard(self.store, self.stage, self.shard, FAILED)
        return record

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def staging(store: ShardStore, stage: str, shard: str) -> Iterator[Staging]:
    stage_area = Staging(store, stage, shard)
    try:
        yield stage_area
    finally:
        stage_area.close()


def _place(store: ShardStore, path: Path, location: str) -> str:
    """Move a staged file to ``location``; its version there."""
    if store.remote:
        fs, target = filesystem(location)
        fs.put_file(str(path), target)
        return file_version(location)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, location)
    return file_version(location)


def _write_sidecar(store: ShardStore, record: Record) -> None:
    kind_folder = () if record.kind == PUBLISHED else (FAILED,)
    store.write_text(json.dumps(record.data, indent=1, ensure_ascii=False), record.stage,
                     *kind_folder, f"{record.shard}{SIDECAR_SUFFIX}")


def _remove_unlisted(store: ShardStore, previous: Record | None, now: Record) -> None:
    """Files the previous record of the same place listed and ``now`` does not (another token
    format, say)."""
    if previous is None:
        return
    names = {entry["name"] for entry in now.files}
    for entry in previous.files:
        if entry["name"] not in names:
            store.remove(file_location(store, previous, entry["name"]))


def discard(store: ShardStore, stage: str, shard: str, kind: str) -> None:
    """Remove an output: its sidecar first (so no reader sees a sidecar without its files),
    then its files."""
    record = read_record(store, stage, shard, kind)
    store.remove(sidecar_location(store, stage, shard, kind))
    for entry in record.files if record else []:
        store.remove(file_location(store, record, entry["name"]))


def rewrite(store: ShardStore, record: Record, data: dict, passed: bool) -> Record:
    """``record`` with new sidecar ``data`` (checks judged again): kept where it is, or moved
    between the published and the failed folder when the verdict changed."""
    kind = PUBLISHED if passed else FAILED
    updated = Record(record.stage, record.shard, kind, {**data, "files": record.files})
    if kind == record.kind:
        _write_sidecar(store, updated)
        return updated
    if record.kind == PUBLISHED:
        store.remove(sidecar_location(store, record.stage, record.shard))
    previous = read_record(store, record.stage, record.shard, kind)
    for entry in updated.files:
        entry["version"] = _move(store, file_location(store, record, entry["name"]),
                                 file_location(store, updated, entry["name"]))
    _write_sidecar(store, updated)
    _remove_unlisted(store, previous, updated)
    if record.kind == FAILED:
        store.remove(sidecar_location(store, record.stage, record.shard, FAILED))
    return updated


def _move(store: ShardStore, source: str, target: str) -> str:
    if store.remote:
        fs, src = filesystem(source)
        fs.mv(src, filesystem(target)[1])
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    return file_version(target)


def read_sidecar(store: ShardStore, stage: str, shard: str) -> dict | None:
    """The published output's sidecar data, or None."""
    record = read_record(store, stage, shard)
    return record.data if record else None

