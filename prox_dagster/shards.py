"""Shards: raw readers, the row contracts of every stage, and atomic writers.

A raw shard is one file of crawled documents: ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` or
``.parquet``. Each record needs a string ``text``; ``id``, ``url`` and ``source`` are carried as
columns and every other field goes, as JSON, into ``meta``.

Nothing read from a raw file is lost silently. A record that cannot become a document (a line that
is not JSON, not an object, lacks a string ``text``, or repeats an id already seen in the shard) is
kept in the *quarantine* table with its line number, its raw content and the reason. Bytes that are
not valid UTF-8 are decoded with U+FFFD replacement: the document is kept (web text with a few bad
bytes is still text), counted, and flagged in ``meta`` as ``"utf8_repaired": true``.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

RAW_SUFFIXES = (".jsonl.zst", ".jsonl.gz", ".jsonl", ".parquet")
CARRIED_FIELDS = ("id", "text", "url", "source")

# Row contracts of each stage (ARCHITECTURE section 2): the columns a stage's Parquet must hold.
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "raw_shard": {
        "id": pl.String(), "text": pl.String(), "url": pl.String(), "source": pl.String(),
        "meta": pl.String(),
    },
    "raw_quarantine": {
        "line_no": pl.Int64(), "reason": pl.String(), "raw": pl.String(),
    },
    "doc_refined_shard": {
        "id": pl.String(), "text": pl.String(), "doc_program": pl.String(),
        "doc_parse_ok": pl.Boolean(), "doc_keep": pl.Boolean(), "refiner_version": pl.String(),
    },
    "chunked_shard": {
        "doc_id": pl.String(), "chunk_index": pl.Int32(), "line_start": pl.Int32(),
        "line_end": pl.Int32(), "chunk_text": pl.String(), "n_tokens": pl.Int32(),
    },
    "chunk_refined_shard": {
        "doc_id": pl.String(), "chunk_index": pl.Int32(), "line_start": pl.Int32(),
        "line_end": pl.Int32(), "chunk_program": pl.String(), "chunk_parse_ok": pl.Boolean(),
        "program_dialect": pl.String(), "refiner_version": pl.String(),
    },
    "clean_shard": {
        "id": pl.String(), "text": pl.String(), "status": pl.String(), "n_ops": pl.Int32(),
        "n_errors": pl.Int32(), "tokens_in": pl.Int64(), "tokens_out": pl.Int64(),
        "refiner_version": pl.String(),
    },
}


class ShardError(ValueError):
    """A shard that cannot be read at all (missing file, unknown format, unreadable Parquet)."""


@dataclass
class RawShard:
    """What reading one raw file produced: the documents, the quarantined records and counts."""

    shard: str
    documents: pl.DataFrame
    quarantine: pl.DataFrame
    stats: Counter = field(default_factory=Counter)


def shard_key(path: str | os.PathLike) -> str | None:
    """The partition key of a raw file (its name without the raw suffix), or None if not raw."""
    name = Path(path).name
    for suffix in RAW_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def read_raw_shard(path: str | os.PathLike, shard: str | None = None) -> RawShard:
    """Read a raw shard file into the ``raw_shard`` contract plus a quarantine table."""
    path = Path(path)
    shard = shard or shard_key(path) or path.name
    if not path.is_file():
        raise ShardError(f"shard {shard!r}: raw file {str(path)!r} does not exist")
    if path.name.endswith(".parquet"):
        return _read_parquet(path, shard)
    if shard_key(path) is None:
        raise ShardError(
            f"shard {shard!r}: {path.name!r} is not a raw shard (expected one of {RAW_SUFFIXES})"
        )
    return _read_jsonl(path, shard)


def _open_lines(path: Path) -> Iterator[bytes]:
    name = path.name
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rb") as fh:
            yield from fh
    elif name.endswith(".jsonl.zst"):
        import zstandard

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zst:
            yield from io.BufferedReader(zst)
    else:
        with open(path, "rb") as fh:
            yield from fh


class _Builder:
    """Accumulates documents and quarantined records with the shard's id bookkeeping."""

    def __init__(self, shard: str, source: str):
        self.shard, self.source = shard, source
        self.cols: dict[str, list] = {c: [] for c in SCHEMAS["raw_shard"]}
        self.quarantine: dict[str, list] = {c: [] for c in SCHEMAS["raw_quarantine"]}
        self.seen: set[str] = set()
        self.stats: Counter = Counter()

    def reject(self, line_no: int, reason: str, raw: str) -> None:
        self.quarantine["line_no"].append(line_no)
        self.quarantine["reason"].append(reason)
        self.quarantine["raw"].append(raw)
        self.stats["quarantined"] += 1
        self.stats[f"quarantined:{reason.split(':')[0]}"] += 1

    def add(self, line_no: int, record: dict, raw: str, repaired: bool = False) -> None:
        text = record.get("text")
        if "text" not in record:
            return self.reject(line_no, "missing text", raw)
        if not isinstance(text, str):
            return self.reject(line_no, f"text is {type(text).__name__}, not a string", raw)
        rid = record.get("id")
        rid = f"{self.shard}/{line_no:08d}" if rid is None or rid == "" else str(rid)
        if rid in self.seen:
            return self.reject(line_no, f"duplicate id: {rid}", raw)
        self.seen.add(rid)
        meta = {k: v for k, v in record.items() if k not in CARRIED_FIELDS}
        if repaired:
            meta["utf8_repaired"] = True
            self.stats["utf8_repaired"] += 1
        url = record.get("url")
        source = record.get("source")
        self.cols["id"].append(rid)
        self.cols["text"].append(text)
        self.cols["url"].append(None if url is None else str(url))
        self.cols["source"].append(self.source if source is None else str(source))
        self.cols["meta"].append(json.dumps(meta, ensure_ascii=False, default=str))
        self.stats["documents"] += 1

    def build(self) -> RawShard:
        docs = pl.DataFrame(self.cols, schema=SCHEMAS["raw_shard"])
        quarantine = pl.DataFrame(self.quarantine, schema=SCHEMAS["raw_quarantine"])
        return RawShard(self.shard, docs, quarantine, self.stats)


def _read_jsonl(path: Path, shard: str) -> RawShard:
    builder = _Builder(shard, path.name)
    try:
        for line_no, line in enumerate(_open_lines(path)):
            builder.stats["lines"] += 1
            if not line.strip():
                builder.stats["blank_lines"] += 1
                continue
            try:
                decoded, repaired = line.decode("utf-8"), False
            except UnicodeDecodeError:
                decoded, repaired = line.decode("utf-8", errors="replace"), True
            decoded = decoded.rstrip("\r\n")
            try:
                record = json.loads(decoded)
            except (json.JSONDecodeError, RecursionError) as exc:
                builder.reject(line_no, f"invalid JSON: {str(exc)[:120]}", decoded)
                continue
            if not isinstance(record, dict):
                builder.reject(line_no, f"record is a JSON {type(record).__name__}, not an object",
                               decoded)
                continue
            builder.add(line_no, record, decoded, repaired)
    except (OSError, EOFError) as exc:
        # A truncated .gz/.zst: keep what was read and say where the file broke.
        builder.reject(builder.stats["lines"], f"unreadable file tail: {exc}", "")
    return builder.build()


def _read_parquet(path: Path, shard: str) -> RawShard:
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for corrupt files
        raise ShardError(f"shard {shard!r}: cannot read Parquet {str(path)!r}: {exc}") from exc
    builder = _Builder(shard, path.name)
    if "text" not in frame.columns:
        raise ShardError(f"shard {shard!r}: Parquet {str(path)!r} has no 'text' column "
                         f"(columns: {frame.columns})")
    for line_no, record in enumerate(frame.iter_rows(named=True)):
        builder.stats["lines"] += 1
        raw = json.dumps(record, ensure_ascii=False, default=str)
        builder.add(line_no, record, raw)
    return builder.build()


def write_atomic(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous file (if any) untouched and no partial file under the
    final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_parquet_atomic(frame: pl.DataFrame, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda tmp: frame.write_parquet(tmp, compression="zstd"))


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def schema_problems(frame: pl.DataFrame, contract: str) -> list[str]:
    """Columns of ``contract`` missing from ``frame`` or of another type (empty: conforms)."""
    problems = []
    for name, dtype in SCHEMAS[contract].items():
        if name not in frame.columns:
            problems.append(f"missing column {name!r}")
        elif frame.schema[name] != dtype and frame.schema[name] != pl.Null():
            problems.append(f"column {name!r} is {frame.schema[name]}, expected {dtype}")
    return problems


def select_raw_shards(names: Iterable[str], patterns: Sequence[str] | None = None,
                      where: str = "") -> dict[str, str]:
    """Which file names (of one folder or prefix) are raw shards, by partition key: a raw
    suffix, not hidden, matching one of ``patterns`` (globs, e.g. ``crawl-2026-*``) if given.
    A key with two files is an error."""
    found: dict[str, str] = {}
    for name in sorted(names):
        key = shard_key(name)
        if key is None or name.startswith("."):
            continue
        if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if key in found:
            raise ShardError(f"shard {key!r} exists twice in {where!r}: {found[key]} and {name}")
        found[key] = name
    return found


def find_raw_shards(folder: str | os.PathLike,
                    patterns: Sequence[str] | None = None) -> dict[str, Path]:
    """Raw shard files directly in ``folder`` by partition key (sorted; no folder: empty)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    files = [path.name for path in folder.iterdir() if path.is_file()]
    return {key: folder / name
            for key, name in select_raw_shards(files, patterns, str(folder)).items()}
