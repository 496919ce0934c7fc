"""Stage 2: a doc-level program (keep_doc / drop_doc) for every document."""

import dagster as dg

from prox_dagster.fingerprint import StageSettings
from prox_dagster.pipeline import refine_documents_stream
from prox_dagster.stages import upstream
from prox_dagster.resources import CheckThresholds, RefinerResource, ShardStorage
from prox_dagster.resources.settings import stage_settings_of

from .common import (ShardJob, ShardOutput, progress_logger, refiner_asset_settings,
                     refiner_checkpoints, refiner_metadata, run_shards, shard_checks, streamed)

CHECKS = {"doc_parse_rate": "Share of doc programs that parse is at least "
                            "min_doc_parse_rate (GX)."}


def build_doc_refined_shard(expected: StageSettings, op_tags: dict | None = None,
                            shards_per_run: int = 1, gpu: bool = False) -> dg.AssetsDefinition:
    @dg.asset(
        deps=upstream("doc_refined_shard"),
        **refiner_asset_settings("doc_refined_shard", expected.code_version, op_tags,
                                 shards_per_run, gpu),
        check_specs=shard_checks("doc_refined_shard", CHECKS),
    )
    def doc_refined_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                          refiner: RefinerResource, checks: CheckThresholds):
        """One row per raw document, with the refiner's `doc_program`, `doc_parse_ok` and its
        verdict `doc_keep` (the documents that are chunked). Dropped documents stay, flagged,
        for audits."""
        engine = refiner.get()

        def work(job: ShardJob) -> ShardOutput:
            checkpoints = refiner_checkpoints(context, storage, job, engine)
            with job.staging.writer() as written:
                flags = refine_documents_stream(
                    storage.store.source("raw_shard", job.shard), written, engine,
                    batch_size=refiner.batch_size, checkpoints=checkpoints,
                    progress=progress_logger(context, f"{job.shard} doc programs"))
            kept = int(flags["doc_keep"].sum())
            return streamed(
                written, rows_in=flags.height,
                observations={"rows": flags.height, "parsed": int(flags["doc_parse_ok"].sum())},
                extra={"docs_kept": kept, "docs_dropped": flags.height - kept,
                       "parse_rate": float(flags["doc_parse_ok"].mean() or 0.0),
                       **(checkpoints.stats if checkpoints else {}),
                       **refiner_metadata(engine, expected.code_version, context)},
                written=checkpoints.finish if checkpoints else None)

        yield from run_shards(context, storage, work=work, limits=checks.settings(),
                              expected=stage_settings_of("doc_refined_shard", refiner=refiner,
                                                         checks=checks))

    return doc_refined_shard
