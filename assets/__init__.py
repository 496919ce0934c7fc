"""Dagster assets: one module per stage, plus partitions, jobs and sensors."""

import dagster as dg

from .chunk import chunked_shard
from .clean import build_clean_shard
from .jobs import pretraining_set_job, refine_shard_job
from .partitions import shards_partitions_def
from .pretraining import pretraining_set
from .raw import raw_shard
from .refine_chunks import build_chunk_refined_shard
from .refine_docs import build_doc_refined_shard
from .sensors import raw_shard_sensor
from .tokenize import tokenized_shard


def build_assets(refiner_version: str, policy_version: str,
                 refiner_op_tags: dict | None = None) -> list[dg.AssetsDefinition]:
    """The seven assets; refiner-dependent ones carry the refiner version as code version and
    the refiner's per-step resource requests as op tags."""
    return [
        raw_shard,
        build_doc_refined_shard(refiner_version, refiner_op_tags),
        chunked_shard,
        build_chunk_refined_shard(refiner_version, refiner_op_tags),
        build_clean_shard(f"{refiner_version}|{policy_version}"),
        tokenized_shard,
        pretraining_set,
    ]


JOBS = [refine_shard_job, pretraining_set_job]
SENSORS = [raw_shard_sensor]

__all__ = ["JOBS", "SENSORS", "build_assets", "shards_partitions_def"]
