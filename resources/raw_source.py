"""The folder new raw shards land in (watched by the sensor)."""

from pathlib import Path

import dagster as dg

from prox_dagster.shards import ShardError, find_raw_shards


class RawSource(dg.ConfigurableResource):
    """Raw shard files (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet``) in ``path``.

    ``patterns`` (globs on the file name) narrows what counts as a shard; the sensor registers
    at most ``max_shards_per_tick`` new shards per evaluation, the rest on the next ticks.
    """

    path: str = "./.prox_data/raw"
    patterns: list[str] = []
    max_shards_per_tick: int = 200

    def shards(self) -> dict[str, Path]:
        return find_raw_shards(self.path, self.patterns or None)

    def locate(self, shard: str) -> Path:
        found = self.shards().get(shard)
        if found is None:
            raise ShardError(f"shard {shard!r}: no raw file for it in {self.path!r}"
                             + (f" matching {self.patterns}" if self.patterns else ""))
        return found
