"""Dagster assets: one module per stage, plus partitions, jobs and sensors."""

import dagster as dg

from .audit import lineage_audit
from .chunk import build_chunked_shard
from .clean import build_clean_shard
from .jobs import (classifier_model_job, lineage_audit_job, pretraining_set_job,
                   refiner_evaluation_job, refine_shard_job)
from .partitions import shards_partitions_def
from .pretraining import pretraining_set
from .quality import build_refiner_evaluation, classifier_model
from .raw import build_raw_shard
from .refine_chunks import build_chunk_refined_shard
from .refine_docs import build_doc_refined_shard
from .sensors import build_raw_shard_sensor, build_refine_schedule
from .tokenize import build_tokenized_shard


def build_assets(refiner_version: str, policy_version: str,
                 refiner_op_tags: dict | None = None,
                 shards_per_run: int = 16) -> list[dg.AssetsDefinition]:
    """The seven assets, the lineage audit, the refiner evaluation and the classifier model. Refiner-dependent ones carry the refiner
    version as code version and the refiner's per-step resource requests as op tags. Backfills
    run ``shards_per_run`` shards per run, so the refiner model loads once per that many."""
    n = shards_per_run
    return [
        build_raw_shard(n),
        build_doc_refined_shard(refiner_version, refiner_op_tags, n),
        build_chunked_shard(n),
        build_chunk_refined_shard(refiner_version, refiner_op_tags, n),
        build_clean_shard(f"{refiner_version}|{policy_version}", n),
        build_tokenized_shard(n),
        pretraining_set,
        lineage_audit,
        build_refiner_evaluation(refiner_version),
        classifier_model,
    ]


def build_automation(refiner_version: str, shards_per_run: int = 16) -> dict:
    """The raw-shard sensor and the refine schedule (both stopped until turned on)."""
    return {"sensors": [build_raw_shard_sensor(shards_per_run)],
            "schedules": [build_refine_schedule(refiner_version, shards_per_run)]}


JOBS = [refine_shard_job, pretraining_set_job, lineage_audit_job, refiner_evaluation_job,
        classifier_model_job]

__all__ = ["JOBS", "build_assets", "build_automation", "shards_partitions_def"]
