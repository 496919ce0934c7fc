"""Where every stage's files live: a local folder or an ``s3://`` prefix."""

import dagster as dg

from prox_dagster.store import ShardStore


class ShardStorage(dg.ConfigurableResource):
    """Shards of every asset under ``{base}/{asset}/{shard}.parquet`` (atomic writes); ``base``
    is a folder or ``s3://bucket/prefix`` (credentials and endpoint from ``AWS_*``)."""

    base: str = "./.prox_data"

    @property
    def store(self) -> ShardStore:
        return ShardStore(self.base)
