"""Jobs: refine one shard through every partitioned stage; rebuild the pre-training set."""

import dagster as dg

from .partitions import shards_partitions_def

SHARD_ASSETS = ["raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
                "clean_shard", "tokenized_shard"]

refine_shard_job = dg.define_asset_job(
    "refine_shard_job", selection=dg.AssetSelection.assets(*SHARD_ASSETS),
    partitions_def=shards_partitions_def,
    description="Every partitioned stage of one shard, raw to tokenized.")

pretraining_set_job = dg.define_asset_job(
    "pretraining_set_job", selection=dg.AssetSelection.assets("pretraining_set"),
    description="Rebuild the pre-training manifest from all tokenized shards.")
