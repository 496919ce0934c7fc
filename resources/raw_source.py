"""The folder new raw shards land in (watched by the sensor)."""

from pathlib import Path

import dagster as dg

from prox_dagster.shards import ShardError, find_raw_shards


class RawSource(dg.ConfigurableResource):
    """Raw shard files (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet``) in ``path``."""

    path: str = "./.prox_data/raw"

    def shards(self) -> dict[str, Path]:
        return find_raw_shards(self.path)

    def locate(self, shard: str) -> Path:
        found = self.shards().get(shard)
        if found is None:
            raise ShardError(f"shard {shard!r}: no raw file for it in {self.path!r}")
        return found
