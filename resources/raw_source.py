"""Where new raw shards land (a folder or an ``s3://`` prefix), watched by the sensor."""

import dagster as dg

from prox_dagster.shards import MAX_SHARD_BYTES, MAX_SHARD_LINES
from prox_dagster.store import RawEntry, list_raw_shards, locate_raw_shard, normalize


class RawSource(dg.ConfigurableResource):
    """Raw shard files (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet``) directly under
    ``path``: a local folder or ``s3://bucket/prefix``.

    ``patterns`` (globs on the file name) narrows what counts as a shard; the sensor registers
    at most ``max_shards_per_tick`` new shards and records at most
    ``max_observations_per_tick`` crawl-file observations (event-log rows) per evaluation, and
    starts no more of either after ``max_tick_seconds`` (a slow listing on S3 leaves less of
    the tick): the rest on the next ticks. At the defaults, 100,000 new files are registered
    in 10 ticks. A raw file is read up to ``max_shard_lines`` lines or rows (10
    million), a JSON lines file up to ``max_shard_bytes`` decompressed bytes (8 GiB): past
    either, one quarantine row says where reading stopped, and the lines before it are kept.
    """

    path: str = "./.prox_data/raw"
    patterns: list[str] = []
    max_shards_per_tick: int = 10_000
    max_observations_per_tick: int = 10_000
    max_tick_seconds: float = 20.0  # under Dagster's 60 s sensor timeout, with room
    max_shard_bytes: int = MAX_SHARD_BYTES
    max_shard_lines: int = MAX_SHARD_LINES

    def listing(self) -> tuple[dict[str, RawEntry], dict[str, str]]:
        """``({key: RawEntry}, {key or "/" + file name: why it is refused})`` from one listing: the
        second holds the keys that two files share or whose file is not a regular file (a
        link, a FIFO), and the files that look like crawl data in another format or case
        (``x.JSONL``, ``x.ndjson``): reported, never registered or read."""
        return list_raw_shards(normalize(self.path), self.patterns or None)

    def locate(self, shard: str) -> str:
        """One shard's file, without listing the folder."""
        return locate_raw_shard(normalize(self.path), shard, self.patterns or None)
