"""Stage 4: a chunk-level program (remove_lines / normalize / keep_chunk) for every chunk."""

import time

import dagster as dg

from prox_dagster.pipeline import refine_chunks
from prox_dagster.quality import parse_rate
from resources import CheckThresholds, RefinerResource, ShardStorage

from .common import (check_result, progress_logger, refiner_asset_settings, refiner_metadata,
                     shard_result)


def build_chunk_refined_shard(code_version: str,
                               op_tags: dict | None = None) -> dg.AssetsDefinition:
    @dg.asset(
        deps=["chunked_shard"],
        **refiner_asset_settings(code_version, op_tags),
        check_specs=[dg.AssetCheckSpec(
            "chunk_parse_rate", asset="chunk_refined_shard", blocking=True,
            description="Share of chunk programs that parse is at least min_chunk_parse_rate "
                        "(GX).")],
    )
    def chunk_refined_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                            refiner: RefinerResource,
                            checks: CheckThresholds) -> dg.MaterializeResult:
        """One row per chunk, with the refiner's `chunk_program` and `chunk_parse_ok`."""
        shard = context.partition_key
        started = time.perf_counter()
        chunks = storage.read("chunked_shard", shard)
        engine = refiner.get()
        refined = refine_chunks(chunks, engine, batch_size=refiner.batch_size,
                                progress=progress_logger(context, "chunk programs"))
        path = storage.write(refined, "chunk_refined_shard", shard)
        outcome = parse_rate(refined, "chunk_parse_ok",
                             checks.thresholds().min_chunk_parse_rate)
        return shard_result(
            context, path, started, rows_in=chunks.height, rows_out=refined.height,
            check_results=[check_result("chunk_parse_rate", outcome)],
            parse_rate=float(refined["chunk_parse_ok"].mean() or 0.0) if refined.height else 1.0,
            **refiner_metadata(engine, code_version, context),
        )

    return chunk_refined_shard
