"""Stage 2: a doc-level program (keep_doc / drop_doc) for every document."""

import time

import dagster as dg

from prox_dagster.pipeline import refine_documents
from prox_dagster.quality import parse_rate
from resources import CheckThresholds, ProgramPolicy, RefinerResource, ShardStorage

from .common import (check_result, progress_logger, refiner_asset_settings, refiner_metadata,
                     shard_result)


def build_doc_refined_shard(code_version: str,
                             op_tags: dict | None = None) -> dg.AssetsDefinition:
    @dg.asset(
        deps=["raw_shard"],
        **refiner_asset_settings(code_version, op_tags),
        check_specs=[dg.AssetCheckSpec(
            "doc_parse_rate", asset="doc_refined_shard", blocking=True,
            description="Share of doc programs that parse is at least min_doc_parse_rate (GX).")],
    )
    def doc_refined_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                          refiner: RefinerResource, policy: ProgramPolicy,
                          checks: CheckThresholds) -> dg.MaterializeResult:
        """One row per raw document, with the refiner's `doc_program`, `doc_parse_ok` and the
        decision `doc_keep`. Dropped documents stay, flagged, for audits."""
        shard = context.partition_key
        started = time.perf_counter()
        raw = storage.read("raw_shard", shard)
        engine = refiner.get()
        refined = refine_documents(raw, engine, batch_size=refiner.batch_size,
                                   policy=policy.policy(),
                                   progress=progress_logger(context, "doc programs"))
        path = storage.write(refined, "doc_refined_shard", shard)
        outcome = parse_rate(refined, "doc_parse_ok", checks.thresholds().min_doc_parse_rate)
        kept = int(refined["doc_keep"].sum())
        return shard_result(
            context, path, started, rows_in=raw.height, rows_out=refined.height,
            check_results=[check_result("doc_parse_rate", outcome)],
            docs_kept=kept, docs_dropped=refined.height - kept,
            parse_rate=float(refined["doc_parse_ok"].mean() or 0.0),
            **refiner_metadata(engine, code_version, context),
        )

    return doc_refined_shard
