"""Stage 5: the programs executed; the refined text and status of every document."""

from dataclasses import asdict

import dagster as dg

from prox_dagster.fingerprint import StageSettings
from prox_dagster.outputs import stale_upstream
from prox_dagster.pipeline import execute_stream
from prox_dagster.stages import upstream
from prox_dagster.resources import (CheckThresholds, ProgramPolicy, RefinerResource, ShardStorage,
                                    TokenizerResource)

from .audit import expected_of
from .common import ShardJob, ShardOutput, run_shards, shard_asset_settings, shard_checks, streamed

CHECKS = {
    "token_retention": "Tokens out / tokens in lies within [min, max]_token_retention (GX), "
                       "each document weighing at most 32,768 tokens.",
    "kept_share": "At least min_kept_share of the documents are kept.",
    "programs_match_documents": "The chunk programs were written for the current doc decision "
                                "by the same refiner, and every upstream stage is current.",
}


def build_clean_shard(expected: StageSettings, shards_per_run: int = 1) -> dg.AssetsDefinition:
    @dg.asset(
        deps=upstream("clean_shard"),
        **shard_asset_settings("clean_shard", "refine", shards_per_run,
                               expected.code_version),
        check_specs=shard_checks("clean_shard", CHECKS),
    )
    def clean_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                    tokenizer: TokenizerResource, policy: ProgramPolicy,
                    checks: CheckThresholds, refiner: RefinerResource):
        """One row per raw document: the refined `text`, `status` (kept, dropped_doc,
        dropped_chunk, fallback_raw), `n_ops`, `n_errors`, `tokens_in`, `tokens_out` and the
        `refiner_version` that wrote its programs. `refinement_preview` shows a few dropped
        documents with their reason and removed lines with the call that removed them."""
        # this run's settings of every stage, to tell whether the upstream stages are current
        upstream = expected_of(refiner, policy, tokenizer, checks)

        def work(job: ShardJob) -> ShardOutput:
            store, shard = storage.store, job.shard
            docs = store.source("doc_refined_shard", shard)
            chunk_programs = store.source("chunk_refined_shard", shard)
            behind = [f"{f.stage} is {f.state} ({f.reason})" for f in
                      stale_upstream(store, "clean_shard", shard, upstream)]
            with job.staging.writer() as written:
                summary = execute_stream(docs, chunk_programs, written, tokenizer.get(),
                                         policy.settings())
            tokens_in, tokens_out = summary.tokens_in, summary.tokens_out
            statuses = dict(summary.statuses)
            return streamed(written, rows_in=docs.rows, observations={
                "tokens_in": tokens_in, "tokens_out": tokens_out, "statuses": statuses,
                "weighted_tokens_in": summary.weighted_in,
                "weighted_tokens_out": summary.weighted_out, "outliers": summary.outliers,
                "programs_match_documents": asdict(summary.coverage.outcome(behind)),
            }, extra={
                "docs_kept": statuses.get("kept", 0) + statuses.get("fallback_raw", 0),
                "status_counts": statuses,
                "tokens_in": tokens_in, "tokens_out": tokens_out,
                "token_retention": round(summary.weighted_out / summary.weighted_in, 4)
                if summary.weighted_in else 0.0,
                "program_errors": summary.n_errors,
                "program_ops": summary.n_ops,
                # the refiners of its doc and of its chunk programs
                "refiner_version": ", ".join(sorted(summary.coverage.versions)) or "none",
                "refinement_preview": summary.preview.markdown(),
            })

        yield from run_shards(context, storage, work=work, limits=checks.settings(),
                              expected=upstream["clean_shard"])

    return clean_shard
