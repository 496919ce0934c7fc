"""Dagster assets: one module per stage, plus partitions, jobs and sensors."""

import dagster as dg

from .audit import build_lineage_audit
from .chunk import build_chunked_shard
from .clean import build_clean_shard
from .jobs import (classifier_model_job, lineage_audit_job, pretraining_set_job,
                   refiner_evaluation_job, refine_shard_job)
from .partitions import shards_partitions_def
from .pretraining import pretraining_set
from .quality import build_refiner_evaluation, classifier_model
from .raw import build_raw_shard, raw_crawl_file
from .refine_chunks import build_chunk_refined_shard
from .refine_docs import build_doc_refined_shard
from .sensors import build_raw_shard_sensor, build_refine_schedule
from .tokenize import build_tokenized_shard


def build_assets(versions: dict[str, str], refiner_version: str, token_format: str,
                 refiner_op_tags: dict | None = None,
                 shards_per_run: int = 16) -> list[dg.AssetsDefinition]:
    """The six shard stages (``versions``: each stage's code version, from
    ``prox_dagster.fingerprint``), the pre-training set, the lineage audit, the refiner
    evaluation and the classifier model. The refiner stages carry the refiner's per-step
    resource requests as op tags. Backfills run ``shards_per_run`` shards per run, so the
    refiner model loads once per that many."""
    n = shards_per_run
    return [
        raw_crawl_file,
        build_raw_shard(versions["raw_shard"], n),
        build_doc_refined_shard(versions["doc_refined_shard"], refiner_op_tags, n),
        build_chunked_shard(versions["chunked_shard"], n),
        build_chunk_refined_shard(versions["chunk_refined_shard"], refiner_op_tags, n),
        build_clean_shard(versions["clean_shard"], versions, n),
        build_tokenized_shard(versions["tokenized_shard"], token_format, n),
        pretraining_set,
        build_lineage_audit(versions, refiner_version),
        build_refiner_evaluation(refiner_version),
        classifier_model,
    ]


def build_automation(versions: dict[str, str], shards_per_run: int = 16) -> dict:
    """The raw-shard sensor and the refine schedule (both stopped until turned on)."""
    return {"sensors": [build_raw_shard_sensor(shards_per_run)],
            "schedules": [build_refine_schedule(versions, shards_per_run)]}


JOBS = [refine_shard_job, pretraining_set_job, lineage_audit_job, refiner_evaluation_job,
        classifier_model_job]

__all__ = ["JOBS", "build_assets", "build_automation", "shards_partitions_def"]
