"""Stage 2: a doc-level program (keep_doc / drop_doc) for every document."""

import dagster as dg

from prox_dagster import fingerprint as fp
from prox_dagster.pipeline import refine_documents_stream
from prox_dagster.quality import parse_rate
from resources import CheckThresholds, ProgramPolicy, RefinerResource, ShardStorage
from resources.settings import settings_values

from .common import (ShardOutput, progress_logger, refiner_asset_settings,
                     refiner_checkpoints, refiner_metadata, run_shards, shard_checks, streamed)

CHECKS = {"doc_parse_rate": "Share of doc programs that parse is at least "
                            "min_doc_parse_rate (GX)."}


def build_doc_refined_shard(code_version: str, op_tags: dict | None = None,
                            shards_per_run: int = 1) -> dg.AssetsDefinition:
    @dg.asset(
        deps=["raw_shard"],
        **refiner_asset_settings("doc_refined_shard", code_version, op_tags, shards_per_run),
        check_specs=shard_checks("doc_refined_shard", CHECKS),
    )
    def doc_refined_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                          refiner: RefinerResource, policy: ProgramPolicy,
                          checks: CheckThresholds):
        """One row per raw document, with the refiner's `doc_program`, `doc_parse_ok` and the
        decision `doc_keep`. Dropped documents stay, flagged, for audits."""
        engine = refiner.get()
        minimum = checks.settings().min_doc_parse_rate

        def work(shard: str) -> ShardOutput:
            store = storage.store
            checkpoints = refiner_checkpoints(context, storage, shard)
            with store.writer("doc_refined_shard", shard) as written:
                flags = refine_documents_stream(
                    store.source("raw_shard", shard), written, engine,
                    batch_size=refiner.batch_size, policy=policy.settings(),
                    checkpoints=checkpoints,
                    progress=progress_logger(context, f"{shard} doc programs"))
            kept = int(flags["doc_keep"].sum())
            return streamed(
                written, rows_in=flags.height,
                checks={"doc_parse_rate": parse_rate(flags, "doc_parse_ok", minimum)},
                extra={"docs_kept": kept, "docs_dropped": flags.height - kept,
                       "parse_rate": float(flags["doc_parse_ok"].mean() or 0.0),
                       **checkpoints.stats, **refiner_metadata(engine, code_version, context)},
                written=checkpoints.clear)

        yield from run_shards(context, storage, work=work, code_version=fp.code_version(
            "doc_refined_shard", settings_values(refiner=refiner, policy=policy, checks=checks)))

    return doc_refined_shard
