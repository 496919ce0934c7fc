"""Parquet read and written in record batches, so that no stage holds a whole shard.

Every shard file is written by :class:`BatchWriter`: row groups of at most
:data:`ROW_GROUP_ROWS` rows and about :data:`ROW_GROUP_BYTES` bytes of values, cut at the same
rows whatever the sizes of the batches written (so the same rows make the same bytes, written
in one frame or in many), to a temporary file renamed into place when the writer closes. A
reader then holds one row group at a time (:func:`iter_batches`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import polars as pl

from .atomic_writes import temp_file

ROW_GROUP_ROWS = 2048
ROW_GROUP_BYTES = 32 << 20
READ_BATCH_ROWS = 1024
COMPRESSION = "zstd"


def _row_bytes(frame: pl.DataFrame) -> pl.Series:
    """Bytes of each row's values: string lengths, 8 for any other value (what bounds a row
    group's memory, computed from the rows alone so that the cuts do not depend on batching)."""
    strings = [pl.col(name).str.len_bytes().fill_null(0)
               for name, dtype in frame.schema.items() if dtype == pl.String]
    fixed = 8 * sum(1 for dtype in frame.schema.values() if dtype != pl.String)
    if not strings:
        return pl.Series("bytes", [fixed] * frame.height, dtype=pl.Int64)
    return frame.select((pl.sum_horizontal(strings).cast(pl.Int64) + fixed).alias("bytes"))[
        "bytes"]


class BatchWriter:
    """Write frames of one schema to ``path`` as Parquet, atomically (see the module
    docstring). ``schema``: the columns and types every frame is cast to; by default the first
    frame's. Use as a context manager: the file appears on a clean exit only."""

    def __init__(self, path: str | os.PathLike, schema: Mapping[str, pl.DataType] | None = None,
                 *, keep_empty: bool = True):
        """``keep_empty=False``: no rows, no file (a file with the schema otherwise)."""
        self.path = Path(path)
        self.keep_empty = keep_empty
        self.schema = dict(schema) if schema is not None else None
        self.rows = 0
        self.record: dict | None = None  # set by ShardStore.writer once the file is whole
        self._tmp = temp_file(self.path)
        self._writer = None
        self._pending: pl.DataFrame | None = None
        self._pending_bytes: pl.Series | None = None

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: pl.DataFrame) -> None:
        if self.schema is None:
            self.schema = dict(frame.schema)
        if list(frame.columns) != list(self.schema):
            raise ValueError(f"{self.path.name}: a batch has columns {frame.columns}, the "
                             f"file has {list(self.schema)}")
        if frame.height == 0:
            return
        frame = frame.cast(self.schema)  # an all-null batch column becomes the file's type
        sizes = _row_bytes(frame)
        if self._pending is None:
            self._pending, self._pending_bytes = frame, sizes
        else:
            self._pending = pl.concat([self._pending, frame])
            self._pending_bytes = pl.concat([self._pending_bytes, sizes])
        while self._pending is not None and self._full():
            self._flush_group()

    def _full(self) -> bool:
        return (self._pending.height >= ROW_GROUP_ROWS
                or int(self._pending_bytes.sum()) >= ROW_GROUP_BYTES)

    def _flush_group(self, last: bool = False) -> None:
        cut = self._pending.height
        if not last:
            over = (self._pending_bytes.cum_sum() >= ROW_GROUP_BYTES).arg_true()
            cut = min(ROW_GROUP_ROWS, int(over[0]) + 1 if over.len() else cut)
        self._write_table(self._pending.head(cut))
        rest = self._pending.height - cut
        self._pending = self._pending.tail(rest).rechunk() if rest else None
        self._pending_bytes = self._pending_bytes.tail(rest) if rest else None

    def _write_table(self, frame: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema, compression=COMPRESSION)
        self._writer.write_table(table, row_group_size=max(frame.height, 1))
        self.rows += frame.height

    def close(self) -> Path:
        if self._pending is not None:
            self._flush_group(last=True)
        if self._writer is None and not self.keep_empty:
            self._tmp.unlink(missing_ok=True)
            return self.path
        if self._writer is None:  # no rows: a file with the schema and no row group
            self._write_table(pl.DataFrame(schema=self.schema or {}))
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)


def iter_batches(source, columns: list[str] | None = None,
                 batch_rows: int = READ_BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """The rows of a Parquet file (a path or a binary file object) in frames of at most
    ``batch_rows`` rows, one row group in memory at a time."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    empty = True
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        empty = False
        yield pl.from_arrow(batch)
    if empty:  # the schema, for readers that need the columns
        yield pl.from_arrow(parquet.schema_arrow.empty_table().select(
            columns or parquet.schema_arrow.names))


def write_frame(frame: pl.DataFrame, path: str | os.PathLike) -> Path:
    """One frame, written as :class:`BatchWriter` writes it."""
    with BatchWriter(path, frame.schema) as writer:
        writer.write(frame)
    return Path(path)


class ParquetSource:
    """A stored Parquet file as a source of record batches; ``open_file()`` opens it (a local
    path or an fsspec file) afresh for every pass."""

    def __init__(self, open_file):
        import pyarrow.parquet as pq

        self._open = open_file
        with self._open() as f:
            metadata = pq.ParquetFile(f).metadata
            self.rows = metadata.num_rows

    def batches(self, columns: list[str] | None = None,
                rows: int = READ_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        with self._open() as f:
            yield from iter_batches(f, columns, rows)


class FrameSource:
    """A frame in memory as a source of record batches (the functions' frame-in, frame-out
    forms, the evaluation and tests)."""

    def __init__(self, frame: pl.DataFrame):
        self.frame, self.rows = frame, frame.height

    def batches(self, columns: list[str] | None = None,
                rows: int = READ_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        frame = self.frame.select(columns) if columns is not None else self.frame
        if frame.height == 0:
            yield frame
        for start in range(0, frame.height, rows):
            yield frame.slice(start, rows)


class FrameSink:
    """Collects the batches a stage writes into one frame."""

    def __init__(self, schema: Mapping[str, pl.DataType] | None = None):
        self.schema = dict(schema) if schema is not None else None
        self._frames: list[pl.DataFrame] = []

    def write(self, frame: pl.DataFrame) -> None:
        self._frames.append(frame)

    @property
    def frame(self) -> pl.DataFrame:
        if not self._frames:
            return pl.DataFrame(schema=self.schema or {})
        return pl.concat(self._frames, how="vertical_relaxed")
