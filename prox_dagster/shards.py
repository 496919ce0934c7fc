"""Raw shards: finding them, reading them into the ``raw_shard`` contract, and every stage's
row contract.

Nothing read is lost silently: a record that cannot become a document (not JSON, no string
``text``, a repeated id, over :data:`MAX_RECORD_BYTES`, too many lines) becomes a quarantine row
with its line, byte offset, raw content and reason; a damaged ``.gz``/``.zst`` keeps every record
before the damage. Invalid UTF-8 is repaired with U+FFFD and flagged in ``meta``. Reading is
streamed in bounded pieces, so memory is bounded by the largest record kept.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import polars as pl

from . import local_files
from .programs import MAX_LINE_NUMBER

RAW_SUFFIXES = (".jsonl.zst", ".jsonl.gz", ".jsonl", ".parquet")
# a shard's longest file name is its key and ".provenance.json": 255 bytes on every common
# file system
MAX_KEY_BYTES = 255 - len(".provenance.json")
MAX_SHARD_BYTES = 8 << 30  # decompressed bytes of one JSON lines file read at most
MAX_SHARD_LINES = 10_000_000  # lines of one JSON lines file read at most
# names that look like crawl data but are not read: said, not passed over in silence
NEAR_MISS_SUFFIXES = (".ndjson", ".ndjson.gz", ".ndjson.zst", ".json", ".json.gz", ".json.zst",
                      ".jsonl.bz2", ".jsonl.xz", ".jsonl.lz4", ".jsonl.zstd", ".jsonl.gzip",
                      ".pq", ".parq")
CARRIED_FIELDS = ("id", "text", "url", "source")

# Row contracts of each stage (ARCHITECTURE section 2): the columns a stage's Parquet must hold.
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "raw_shard": {
        "id": pl.String(), "text": pl.String(), "url": pl.String(), "source": pl.String(),
        "meta": pl.String(),
    },
    "raw_quarantine": {
        "line_no": pl.Int64(), "byte_offset": pl.Int64(), "reason": pl.String(),
        "raw": pl.String(),
    },
    "doc_refined_shard": {
        "id": pl.String(), "text": pl.String(), "doc_program": pl.String(),
        "doc_parse_ok": pl.Boolean(), "doc_keep": pl.Boolean(), "refiner_version": pl.String(),
    },
    "chunked_shard": {
        "doc_id": pl.String(), "chunk_index": pl.Int32(), "line_start": pl.Int32(),
        "line_end": pl.Int32(), "chunk_text": pl.String(), "n_tokens": pl.Int32(),
        "truncated": pl.Boolean(),
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


def shard_key(path: str | os.PathLike) -> str | None:
    """The partition key of a raw file (its name without the raw suffix), or None if not raw."""
    name = os.path.basename(path)
    for suffix in RAW_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def stream_raw_shard(path: str | os.PathLike, documents, quarantine,
                     shard: str | None = None, *, max_bytes: int = MAX_SHARD_BYTES,
                     max_lines: int = MAX_SHARD_LINES) -> Counter:
    """Read a raw shard file into the ``raw_shard`` contract, written a batch at a time to the
    ``documents`` sink, and its quarantined records to the ``quarantine`` sink; returns the
    counts (``lines``, ``documents``, ``quarantined``, ``quarantined:{reason}``, ...). A file is
    read up to ``max_lines`` lines (rows), a JSON lines file up to ``max_bytes`` decompressed
    bytes: past either, one quarantine row says where it stopped (a decompression bomb costs
    seconds)."""
    path = Path(path)
    shard = shard or shard_key(path) or path.name
    if not path.name.endswith(".parquet") and shard_key(path) is None:
        raise ShardError(
            f"shard {shard!r}: {path.name!r} is not a raw shard (expected one of {RAW_SUFFIXES})"
        )
    builder = _Builder(shard, path.name, documents, quarantine)
    with open_regular(path, shard) as raw:
        if path.name.endswith(".parquet"):
            _read_parquet(builder, raw, path, max_lines)
        else:
            _read_jsonl(builder, raw, path, max_bytes, max_lines)
    return builder.finish()


def open_regular(path: Path, shard: str):
    """``path`` opened for reading if it is a regular file (see
    :func:`prox_dagster.local_files.open_regular`): a symbolic link (to a secret or out of the
    raw folder), a FIFO or a device is refused without reading a byte of it."""
    try:
        return local_files.open_regular(path, "raw file")
    except FileNotFoundError:
        raise ShardError(f"shard {shard!r}: raw file {str(path)!r} does not exist") from None
    except local_files.NotRegularFile as exc:
        raise ShardError(f"shard {shard!r}: {exc}; only regular files inside the raw folder "
                         "are read: replace it with the file itself") from None


def not_regular(shard: str, location: str, mode: int) -> ShardError:
    """The error for a raw shard's name that is not a regular file (its mode: ``st_mode``)."""
    return ShardError(f"shard {shard!r}: {location!r} is {local_files.kind(mode)}: only regular "
                      "files inside the raw folder are read (nothing of it was read); replace "
                      "it with the file itself")


MAX_RECORD_BYTES = 64 << 20  # a longer JSON line is quarantined by its first bytes
BATCH_ROWS = 1024  # documents (or quarantined records) handed on at a time
BATCH_BYTES = 32 << 20  # ... or fewer, once they hold this much text
QUARANTINED_HEAD = 4096  # bytes of an over-long record kept in its quarantine row
MAX_DOCUMENT_LINES = MAX_LINE_NUMBER + 1  # lines numbered 0..MAX_LINE_NUMBER
_READ_BYTES = 1 << 16
_ZSTD_FEED = 1 << 10  # a zstd block of a few bytes can hold 128 KiB: feed little at a time
_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Damaged(Exception):
    """The file stops decompressing: ``reason`` at compressed byte ``offset``; ``partial``:
    the line cut short (``raw_kept`` of its bytes go to the quarantine row)."""

    raw_kept: int | None = None

    def __init__(self, reason: str, offset: int):
        super().__init__(reason)
        self.reason, self.offset = reason, offset
        self.stream_offset, self.partial = 0, b""

    def where(self, name: str) -> str:
        return (f"damaged file: {name} cannot be read past compressed byte {self.offset} "
                f"(decompressed byte {self.stream_offset + len(self.partial)})")


class _OverCap(_Damaged):
    """The file decompresses to more than the shard's cap of bytes."""

    raw_kept = QUARANTINED_HEAD

    def where(self, name: str) -> str:
        return (f"over the shard's cap: {name} is not read past decompressed byte "
                f"{self.stream_offset + len(self.partial)}")


def _capped(chunks: Iterator[bytes], max_bytes: int) -> Iterator[bytes]:
    read = 0
    for data in chunks:
        if read + len(data) > max_bytes:
            if max_bytes > read:
                yield data[:max_bytes - read]
            raise _OverCap(f"it decompresses to more than {max_bytes} bytes (the shard's cap)",
                           -1)
        read += len(data)
        yield data


def _chunks(raw, name: str) -> Iterator[bytes]:
    """The (decompressed) bytes of the open file ``raw`` named ``name``, in bounded pieces;
    damage raises :class:`_Damaged`."""
    if name.endswith(".jsonl.gz"):
        try:
            with gzip.GzipFile(fileobj=raw) as gz:
                while data := gz.read1(_READ_BYTES):  # read() would lose its last call
                    yield data
        except (OSError, EOFError, zlib.error) as exc:
            raise _Damaged(f"gzip: {exc}", raw.tell()) from exc
    elif name.endswith(".jsonl.zst"):
        yield from _zstd_chunks(raw)
    else:
        while data := raw.read(_READ_BYTES):
            yield data


def _zstd_chunks(raw) -> Iterator[bytes]:
    """Every frame of a zstd file (not only the first), and an error where python-zstandard's
    stream reader would end quietly: a file that stops inside a frame."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    frame, in_frame, consumed = decompressor.decompressobj(), False, 0
    while data := raw.read(_READ_BYTES):
        for i in range(0, len(data), _ZSTD_FEED):
            feed = data[i:i + _ZSTD_FEED]
            while feed:
                try:
                    out = frame.decompress(feed)
                except zstandard.ZstdError as exc:
                    raise _Damaged(f"zstd: {exc}", consumed) from exc
                in_frame = True
                if out:
                    yield out
                if frame.eof:  # the rest of the feed starts the next frame
                    feed, in_frame = frame.unused_data, False
                    frame = decompressor.decompressobj()
                else:
                    feed = b""
            consumed += min(_ZSTD_FEED, len(data) - i)
    if in_frame:
        raise _Damaged("zstd: the file ends inside a frame (cut short)", consumed)


def _lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes, int]]:
    """``(byte offset, line, length)`` of every line of the stream; a line over
    :data:`MAX_RECORD_BYTES` comes with only its first :data:`QUARANTINED_HEAD` bytes and its
    full ``length``, so memory stays bounded. A :class:`_Damaged` error carries the partial line
    before the damage."""
    head = bytearray()
    start = position = length = 0
    try:
        for data in chunks:
            at = 0
            while True:
                newline = data.find(b"\n", at)
                end = len(data) if newline < 0 else newline + 1
                length += end - at
                if length <= MAX_RECORD_BYTES:
                    head += data[at:end]
                elif len(head) > QUARANTINED_HEAD:
                    del head[QUARANTINED_HEAD:]
                if newline < 0:
                    break
                yield start, bytes(head), length
                head.clear()
                start, length, at = position + end, 0, end
            position += len(data)
    except _Damaged as exc:
        exc.stream_offset, exc.partial = start, bytes(head)
        raise
    if length:
        yield start, bytes(head), length


class _Builder:
    """Accumulates documents and quarantined records with the shard's id bookkeeping, and hands
    them to the sinks a batch at a time (:data:`BATCH_ROWS` rows or :data:`BATCH_BYTES`)."""

    def __init__(self, shard: str, source: str, documents, quarantine):
        self.shard, self.source = shard, source
        self.sinks = {"documents": documents, "quarantine": quarantine}
        self.cols: dict[str, list] = {c: [] for c in SCHEMAS["raw_shard"]}
        self.quarantine: dict[str, list] = {c: [] for c in SCHEMAS["raw_quarantine"]}
        self.held = 0  # bytes of text held in cols and quarantine
        self.seen: set[str] = set()
        self.stats: Counter = Counter()

    def _held(self, n_bytes: int) -> None:
        self.held += n_bytes
        if (self.held >= BATCH_BYTES or len(self.cols["id"]) >= BATCH_ROWS
                or len(self.quarantine["reason"]) >= BATCH_ROWS):
            self.flush()

    def flush(self) -> None:
        for name, cols, schema in (("documents", self.cols, SCHEMAS["raw_shard"]),
                                   ("quarantine", self.quarantine, SCHEMAS["raw_quarantine"])):
            if cols[next(iter(cols))]:
                self.sinks[name].write(pl.DataFrame(cols, schema=schema))
                for values in cols.values():
                    values.clear()
        self.held = 0

    def finish(self) -> Counter:
        self.flush()
        for name, contract in (("documents", "raw_shard"), ("quarantine", "raw_quarantine")):
            self.sinks[name].write(pl.DataFrame(schema=SCHEMAS[contract]))  # the schema
        return self.stats

    def reject(self, line_no: int, reason: str, raw: str, byte_offset: int | None = None) -> None:
        self.quarantine["line_no"].append(line_no)
        self.quarantine["byte_offset"].append(byte_offset)
        self.quarantine["reason"].append(reason)
        self.quarantine["raw"].append(raw)
        self.stats["quarantined"] += 1
        self.stats[f"quarantined:{reason.split(':')[0]}"] += 1
        self._held(len(raw))

    def add(self, line_no: int, record: dict, raw: str, repaired: bool = False,
            byte_offset: int | None = None, escapes: bool = False) -> None:
        """``escapes``: the line holds JSON escapes that may decode to lone surrogates."""
        def reject(reason: str) -> None:
            self.reject(line_no, reason, raw, byte_offset)

        text = record.get("text")
        if "text" not in record:
            return reject("missing text")
        if not isinstance(text, str):
            return reject(f"text is {type(text).__name__}, not a string")
        lines = text.count("\n") + 1
        if lines > MAX_DOCUMENT_LINES:
            return reject(f"too many lines: {lines} (programs number at most "
                          f"{MAX_DOCUMENT_LINES})")
        rid = record.get("id")
        rid = f"{self.shard}/{line_no:08d}" if rid is None or rid == "" else str(rid)
        if rid in self.seen:
            return reject(f"duplicate id: {rid}")
        meta = {k: v for k, v in record.items() if k not in CARRIED_FIELDS}
        url, source = record.get("url"), record.get("source")
        row = [rid, text, None if url is None else str(url),
               self.source if source is None else str(source), None]
        try:
            if repaired:
                meta = {**meta, "utf8_repaired": True}
            row[4] = json.dumps(meta, ensure_ascii=False, default=str)
            if escapes and any(v is not None and _SURROGATE.search(v) for v in row):
                # lone surrogates cannot be stored as UTF-8: replaced, like bad bytes
                row = [_without_surrogates(v) for v in row]
                if not repaired:
                    repaired = True
                    row[4] = json.dumps({**json.loads(row[4]), "utf8_repaired": True},
                                        ensure_ascii=False)
        except (RecursionError, ValueError, TypeError) as exc:
            return reject(f"unserializable fields: {type(exc).__name__}: {str(exc)[:120]}")
        if rid != row[0] and row[0] in self.seen:
            return reject(f"duplicate id: {row[0]}")
        self.seen.add(row[0])
        for column, value in zip(("id", "text", "url", "source", "meta"), row):
            self.cols[column].append(value)
        self.stats["documents"] += 1
        if repaired:
            self.stats["utf8_repaired"] += 1
        self._held(len(row[1]) + len(row[4]))


def _without_surrogates(value: str | None) -> str | None:
    return None if value is None else _SURROGATE.sub("\ufffd", value)


def _read_jsonl(builder: _Builder, raw, path: Path, max_bytes: int, max_lines: int) -> None:
    line_no = 0
    try:
        for line_no, (offset, line, length) in enumerate(
                _lines(_capped(_chunks(raw, path.name), max_bytes))):
            if line_no >= max_lines:
                builder.stats["lines"] += 1
                builder.reject(line_no, f"over the shard's cap of {max_lines} lines: "
                               f"{path.name} is not read past line {line_no} (decompressed "
                               f"byte {offset}); the lines before it are kept",
                               line[:QUARANTINED_HEAD].decode("utf-8", errors="replace"), offset)
                return
            builder.stats["lines"] += 1
            if line_no == 0 and line.startswith(_BOM):
                line = line[len(_BOM):]
            if length > MAX_RECORD_BYTES:
                builder.reject(line_no, f"record too long: {length} bytes (limit "
                               f"{MAX_RECORD_BYTES}); raw holds its first {len(line)}",
                               line.decode("utf-8", errors="replace"), offset)
                continue
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
            except (ValueError, RecursionError) as exc:  # ValueError: a 5,000-digit number
                builder.reject(line_no, f"invalid JSON: {str(exc)[:120]}", decoded, offset)
                continue
            if not isinstance(record, dict):
                builder.reject(line_no, f"record is a JSON {type(record).__name__}, not an "
                               "object", decoded, offset)
                continue
            builder.add(line_no, record, decoded, repaired, offset,
                        escapes=_SURROGATE_ESCAPE.search(decoded) is not None)
    except _Damaged as exc:
        # keep what was read and say where the file stopped
        kept = builder.stats["lines"]
        builder.stats["lines"] += 1
        builder.reject(kept, f"{exc.where(path.name)}: {exc.reason}; the {kept} lines before it "
                       "are kept", exc.partial[:exc.raw_kept].decode("utf-8", errors="replace"),
                       exc.stream_offset)


def _read_parquet(builder: _Builder, raw, path: Path, max_lines: int) -> None:
    """A Parquet file's rows, a row group at a time: a damaged row group costs its rows (one
    quarantine row names their range), the others are read."""
    import pyarrow.parquet as pq

    shard = builder.shard
    try:
        parquet = pq.ParquetFile(raw)
        columns = parquet.schema_arrow.names
    except Exception as exc:  # pyarrow raises several error types for corrupt files
        raise ShardError(f"shard {shard!r}: cannot read Parquet {str(path)!r}: {exc}") from exc
    if "text" not in columns:
        raise ShardError(f"shard {shard!r}: Parquet {str(path)!r} has no 'text' column "
                         f"(columns: {columns})")
    line_no = 0
    for group in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if line_no + rows > max_lines:
            builder.stats["lines"] += 1
            builder.reject(line_no, f"over the shard's cap of {max_lines} lines: {path.name} "
                           f"is not read past row {line_no}; the rows before it are kept", "")
            return
        try:
            table = parquet.read_row_group(group)
        except Exception as exc:  # a damaged page or column chunk: pyarrow raises several
            builder.stats["lines"] += 1
            builder.reject(line_no, f"damaged Parquet row group {group}: rows {line_no} to "
                           f"{line_no + rows - 1} cannot be read ({type(exc).__name__}: "
                           f"{str(exc)[:160]}); the other row groups are kept", "")
            line_no += rows
            continue
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            for record in pl.from_arrow(batch).iter_rows(named=True):
                builder.stats["lines"] += 1
                text = json.dumps(record, ensure_ascii=False, default=str)
                if len(text) > MAX_RECORD_BYTES:  # characters: at least as many bytes
                    builder.reject(line_no, f"record too long: {len(text)} characters (limit "
                                   f"{MAX_RECORD_BYTES} bytes); raw holds its first "
                                   f"{QUARANTINED_HEAD}", text[:QUARANTINED_HEAD])
                else:
                    builder.add(line_no, record, text)
                line_no += 1
        del table


def schema_problems(frame: pl.DataFrame, contract: str) -> list[str]:
    """Columns of ``contract`` missing from ``frame`` or of another type (empty: conforms)."""
    problems = []
    for name, dtype in SCHEMAS[contract].items():
        if name not in frame.columns:
            problems.append(f"missing column {name!r}")
        elif frame.schema[name] != dtype and frame.schema[name] != pl.Null():
            problems.append(f"column {name!r} is {frame.schema[name]}, expected {dtype}")
    return problems


def select_raw_shards(names: Iterable[str], patterns: Sequence[str] | None = None
                      ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Which file names (of one folder or prefix) are raw shards, by partition key: a raw
    suffix, not hidden, matching one of ``patterns`` (globs, e.g. ``crawl-2026-*``) if given.
    Returns ``(files, conflicts)``: a key that two files share (``y.jsonl`` and ``y.parquet``)
    is in ``conflicts`` with its file names and not in ``files``, so it is reported for those
    files alone and every other shard flows."""
    found: dict[str, list[str]] = {}
    for name in sorted(names):
        key = _raw_key(name, patterns)
        if key is not None:
            found.setdefault(key, []).append(name)
    return ({key: names[0] for key, names in found.items() if len(names) == 1},
            {key: names for key, names in found.items() if len(names) > 1})


def is_raw_name(name: str, patterns: Sequence[str] | None = None) -> bool:
    """Whether a file name is a raw shard's (see :func:`select_raw_shards`)."""
    return _raw_key(name, patterns) is not None


def _raw_key(name: str, patterns: Sequence[str] | None) -> str | None:
    """The partition key of a raw shard's file name; None if the name is not one's."""
    if name.startswith(".") or patterns and not any(fnmatch.fnmatchcase(name, p)
                                                     for p in patterns):
        return None
    return shard_key(name)


def near_miss(name: str) -> str | None:
    """Why a file that looks like crawl data is not read as a raw shard (a suffix in the wrong
    case or format), or None."""
    if name.startswith(".") or shard_key(name) is not None:
        return None
    lower = name.lower()
    suffix = next((s for s in RAW_SUFFIXES if lower.endswith(s) and len(name) > len(s)), None)
    if suffix is not None:
        return (f"{name!r} is not read: raw shard suffixes are lower case; rename it to "
                f"{name[:-len(suffix)] + suffix!r}")
    suffix = next((s for s in NEAR_MISS_SUFFIXES if lower.endswith(s)), None)
    if suffix is not None:
        return (f"{name!r} is not read: {suffix} is not a raw shard format (read: "
                f"{', '.join(RAW_SUFFIXES)})")
    return None


def key_too_long(shard: str) -> str | None:
    """Why ``shard`` cannot be a partition key (its files' names would not fit), or None."""
    size = len(shard.encode("utf-8", "surrogatepass"))
    if size <= MAX_KEY_BYTES:
        return None
    return (f"shard key {shard[:40]!r}... is {size} bytes: its files' names "
            f"({{key}}.provenance.json) would not fit a file name of 255 bytes; rename its raw "
            f"file to a key of at most {MAX_KEY_BYTES} bytes")


def raw_names(shard: str) -> list[str]:
    """The file names a raw shard's file may have, one per raw format."""
    return [f"{shard}{suffix}" for suffix in RAW_SUFFIXES]


def conflict_error(shard: str, names: Sequence[str], where: str) -> ShardError:
    return ShardError(f"shard {shard!r} has {len(names)} raw files in {where!r}: "
                      f"{', '.join(names)}; remove or rename all but one")


def find_raw_shards(folder: str | os.PathLike, patterns: Sequence[str] | None = None
                    ) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Raw shard files directly in ``folder`` by partition key (sorted; no folder: empty),
    and the keys two files share (see :func:`select_raw_shards`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}, {}
    with os.scandir(folder) as listing:  # file types from the listing: no stat per entry
        names = [entry.name for entry in listing if entry.is_file(follow_symlinks=False)]
    files, conflicts = select_raw_shards(names, patterns)
    return {key: folder / name for key, name in files.items()}, conflicts
