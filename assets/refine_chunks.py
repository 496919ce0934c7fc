"""Stage 4: a chunk-level program (remove_lines / normalize / keep_chunk) for every chunk."""

import dagster as dg

from prox_dagster import fingerprint as fp
from prox_dagster.pipeline import refine_chunks_stream
from prox_dagster.quality import parse_rate
from resources import CheckThresholds, RefinerResource, ShardStorage
from resources.settings import settings_values

from .common import (ShardOutput, progress_logger, refiner_asset_settings,
                     refiner_checkpoints, refiner_metadata, run_shards, shard_checks, streamed)

CHECKS = {"chunk_parse_rate": "Share of chunk programs that parse is at least "
                              "min_chunk_parse_rate (GX)."}


def build_chunk_refined_shard(code_version: str, op_tags: dict | None = None,
                              shards_per_run: int = 1) -> dg.AssetsDefinition:
    @dg.asset(
        deps=["chunked_shard"],
        **refiner_asset_settings("chunk_refined_shard", code_version, op_tags, shards_per_run),
        check_specs=shard_checks("chunk_refined_shard", CHECKS),
    )
    def chunk_refined_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                            refiner: RefinerResource, checks: CheckThresholds):
        """One row per chunk, with the refiner's `chunk_program` and `chunk_parse_ok`."""
        engine = refiner.get()
        minimum = checks.settings().min_chunk_parse_rate

        def work(shard: str) -> ShardOutput:
            store = storage.store
            chunks = store.source("chunked_shard", shard)
            checkpoints = refiner_checkpoints(context, storage, shard)
            with store.writer("chunk_refined_shard", shard) as written:
                parsed = refine_chunks_stream(
                    chunks, written, engine, batch_size=refiner.batch_size,
                    checkpoints=checkpoints,
                    progress=progress_logger(context, f"{shard} chunk programs"))
            rate = float(parsed.mean() or 0.0) if parsed.len() else 1.0
            return streamed(
                written, rows_in=chunks.rows,
                checks={"chunk_parse_rate": parse_rate(parsed.to_frame(), "chunk_parse_ok",
                                                       minimum)},
                extra={"parse_rate": rate, **checkpoints.stats,
                       **refiner_metadata(engine, code_version, context),
                       **getattr(engine, "shard_metadata", dict)()},
                written=checkpoints.clear)

        yield from run_shards(context, storage, work=work, code_version=fp.code_version(
            "chunk_refined_shard", settings_values(refiner=refiner, checks=checks)))

    return chunk_refined_shard
