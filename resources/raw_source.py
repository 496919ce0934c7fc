"""Where new raw shards land (a folder or an ``s3://`` prefix), watched by the sensor."""

import dagster as dg

from prox_dagster.shards import ShardError
from prox_dagster.store import list_raw_shards, normalize


class RawSource(dg.ConfigurableResource):
    """Raw shard files (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet``) directly under
    ``path``: a local folder or ``s3://bucket/prefix``.

    ``patterns`` (globs on the file name) narrows what counts as a shard; the sensor registers
    at most ``max_shards_per_tick`` new shards per evaluation, the rest on the next ticks.
    """

    path: str = "./.prox_data/raw"
    patterns: list[str] = []
    max_shards_per_tick: int = 200

    def shards(self) -> dict[str, tuple[str, int]]:
        """``{key: (file location, modification time in ns)}``."""
        return list_raw_shards(normalize(self.path), self.patterns or None)

    def locate(self, shard: str) -> str:
        found = self.shards().get(shard)
        if found is None:
            raise ShardError(f"shard {shard!r}: no raw file for it in {self.path!r}"
                             + (f" matching {self.patterns}" if self.patterns else ""))
        return found[0]
