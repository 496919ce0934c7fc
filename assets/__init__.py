"""Dagster assets: one module per stage, plus partitions, jobs and sensors."""

import dagster as dg

from prox_dagster.fingerprint import StageSettings

from .ablation import build_ablation
from .audit import build_lineage_audit
from .chunk import build_chunked_shard
from .clean import build_clean_shard
from .jobs import (ablation_job, classifier_model_job, lineage_audit_job, pretraining_set_job,
                   refiner_evaluation_job, refine_shard_job)
from .partitions import shards_partitions_def
from .pretraining import included_shards_current, pretraining_set
from .quality import build_refiner_evaluation, classifier_model
from .raw import build_raw_shard, raw_crawl_file
from .refine_chunks import build_chunk_refined_shard
from .refine_docs import build_doc_refined_shard
from .sensors import build_raw_shard_sensor, build_refine_schedule
from .tokenize import build_tokenized_shard


def build_assets(expected: dict[str, StageSettings], token_format: str,
                 refiner_op_tags: dict | None = None, shards_per_run: int = 16, *,
                 gpu: bool = False, evaluation_version: str = "") -> list[dg.AssetsDefinition]:
    """The six shard stages (``expected``: each stage's settings, from
    ``prox_dagster.fingerprint``), the pre-training set, the lineage audit, the refiner
    evaluation (code version ``evaluation_version``), the classifier model and the training
    ablation. The refiner
    stages carry the refiner's per-step resource requests as op tags and, for a refiner on the
    GPU (``gpu``), the ``gpu`` pool. Backfills run ``shards_per_run`` shards per run, so the
    refiner model loads once per that many."""
    n = shards_per_run
    return [
        raw_crawl_file,
        build_raw_shard(expected["raw_shard"], n),
        build_doc_refined_shard(expected["doc_refined_shard"], refiner_op_tags, n, gpu),
        build_chunked_shard(expected["chunked_shard"], n),
        build_chunk_refined_shard(expected["chunk_refined_shard"], refiner_op_tags, n, gpu),
        build_clean_shard(expected["clean_shard"], n),
        build_tokenized_shard(expected["tokenized_shard"], token_format, n),
        pretraining_set,
        build_lineage_audit(),
        build_refiner_evaluation(evaluation_version),
        classifier_model,
        build_ablation(expected),
    ]


def build_automation(shards_per_run: int = 16) -> dict:
    """The raw-shard sensor and the refine schedule (both stopped until turned on)."""
    return {"sensors": [build_raw_shard_sensor(shards_per_run)],
            "schedules": [build_refine_schedule(shards_per_run)]}


ASSET_CHECKS = [included_shards_current]

JOBS = [refine_shard_job, pretraining_set_job, lineage_audit_job, refiner_evaluation_job,
        classifier_model_job, ablation_job]

__all__ = ["ASSET_CHECKS", "JOBS", "build_assets", "build_automation", "shards_partitions_def"]
