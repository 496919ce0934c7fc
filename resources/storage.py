"""Where every stage's Parquet lives."""

import dagster as dg
import polars as pl

from prox_dagster.shards import ShardStore


class ShardStorage(dg.ConfigurableResource):
    """Shards of every asset under ``{base}/{asset}/{shard}.parquet`` (atomic writes)."""

    base: str = "./.prox_data"

    @property
    def store(self) -> ShardStore:
        return ShardStore(self.base)

    def read(self, asset: str, shard: str) -> pl.DataFrame:
        return self.store.read(asset, shard)

    def write(self, frame: pl.DataFrame, asset: str, shard: str) -> str:
        return str(self.store.write(frame, asset, shard))
