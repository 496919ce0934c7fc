"""Stage 4: a chunk-level program (remove_lines / normalize / keep_chunk) for every chunk."""

import dagster as dg

from prox_dagster.fingerprint import StageSettings
from prox_dagster.pipeline import refine_chunks_stream
from prox_dagster.stages import upstream
from prox_dagster.resources import CheckThresholds, RefinerResource, ShardStorage
from prox_dagster.resources.settings import stage_settings_of

from .common import (ShardJob, ShardOutput, progress_logger, refiner_asset_settings,
                     refiner_checkpoints, refiner_metadata, run_shards, shard_checks, streamed)

CHECKS = {"chunk_parse_rate": "Share of chunk programs that parse is at least "
                              "min_chunk_parse_rate (GX)."}


def build_chunk_refined_shard(expected: StageSettings, op_tags: dict | None = None,
                              shards_per_run: int = 1, gpu: bool = False) -> dg.AssetsDefinition:
    @dg.asset(
        deps=upstream("chunk_refined_shard"),
        **refiner_asset_settings("chunk_refined_shard", expected.code_version, op_tags,
                                 shards_per_run, gpu),
        check_specs=shard_checks("chunk_refined_shard", CHECKS),
    )
    def chunk_refined_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                            refiner: RefinerResource, checks: CheckThresholds):
        """One row per chunk, with the refiner's `chunk_program` and `chunk_parse_ok`."""
        engine = refiner.get()

        def work(job: ShardJob) -> ShardOutput:
            chunks = storage.store.source("chunked_shard", job.shard)
            checkpoints = refiner_checkpoints(context, storage, job, engine)
            removed: dict[str, int] = {}
            with job.staging.writer() as written:
                parsed = refine_chunks_stream(
                    chunks, written, engine, batch_size=refiner.batch_size,
                    checkpoints=checkpoints, removed_by_kind=removed,
                    progress=progress_logger(context, f"{job.shard} chunk programs"))
            rate = float(parsed.mean() or 0.0) if parsed.len() else 1.0
            return streamed(
                written, rows_in=chunks.rows,
                observations={"rows": parsed.len(), "parsed": int(parsed.sum() or 0)},
                extra={"parse_rate": rate, **(checkpoints.stats if checkpoints else {}),
                       **refiner_metadata(engine, expected.code_version, context),
                       **getattr(engine, "shard_metadata", dict)(),
                       # what the programs removed, by the line kind they name (the classifier
                       # names one per removal; LM programs name none)
                       **({"removed_lines_by_kind": dict(sorted(removed.items()))}
                          if removed else {})},
                written=checkpoints.finish if checkpoints else None)

        yield from run_shards(context, storage, work=work, limits=checks.settings(),
                              expected=stage_settings_of("chunk_refined_shard",
                                                         refiner=refiner, checks=checks))

    return chunk_refined_shard
