"""A raw file read whole into frames, as the ``raw_shard`` step streams it into Parquet."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from prox_dagster.parquet_batches import FrameSink
from prox_dagster.shards import shard_key, stream_raw_shard


@dataclass
class RawShard:
    shard: str
    documents: pl.DataFrame
    quarantine: pl.DataFrame
    stats: Counter


def read_raw_shard(path: str | os.PathLike, shard: str | None = None) -> RawShard:
    documents, quarantine = FrameSink(), FrameSink()
    stats = stream_raw_shard(path, documents, quarantine, shard)
    return RawShard(shard or shard_key(path) or Path(path).name, documents.frame,
                    quarantine.frame, stats)
