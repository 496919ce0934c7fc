"""Stage 4: a chunk-level program (remove_lines / normalize / keep_chunk) for every chunk."""

import dagster as dg

from prox_dagster import fingerprint as fp
from prox_dagster.pipeline import refine_chunks
from prox_dagster.quality import parse_rate
from resources import CheckThresholds, RefinerResource, ShardStorage
from resources.settings import settings_values

from .common import (ShardOutput, progress_logger, refiner_asset_settings,
                     refiner_checkpoints, refiner_metadata, run_shards, shard_checks)

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
            chunks = storage.read("chunked_shard", shard)
            checkpoints = refiner_checkpoints(context, storage, shard)
            refined = refine_chunks(chunks, engine, batch_size=refiner.batch_size,
                                    checkpoints=checkpoints,
                                    progress=progress_logger(context, f"{shard} chunk programs"))
            rate = float(refined["chunk_parse_ok"].mean() or 0.0) if refined.height else 1.0
            return ShardOutput(
                refined, rows_in=chunks.height,
                checks={"chunk_parse_rate": parse_rate(refined, "chunk_parse_ok", minimum)},
                extra={"parse_rate": rate, **checkpoints.stats,
                       **refiner_metadata(engine, code_version, context)},
                written=checkpoints.clear)

        yield from run_shards(context, storage, work=work, code_version=fp.code_version(
            "chunk_refined_shard", settings_values(refiner=refiner, checks=checks)))

    return chunk_refined_shard
