"""Stage 5: the programs executed; the refined text and status of every document."""

import dagster as dg
import polars as pl

from prox_dagster.pipeline import execute_shard
from prox_dagster.preview import refinement_preview
from prox_dagster.quality import CheckOutcome, no_empty_kept_text, token_retention, unique_ids
from prox_dagster.shards import schema_problems
from resources import CheckThresholds, ProgramPolicy, ShardStorage, TokenizerResource

from .common import ShardOutput, run_shards, shard_asset_settings, shard_checks

CHECKS = {
    "token_retention": "Tokens out / tokens in lies within [min, max]_token_retention (GX).",
    "no_empty_kept_text": "No kept document has empty text (GX).",
    "unique_ids": "Document ids are unique (GX).",
    "every_document_once": "Every doc_refined id appears exactly once, kept or with a status.",
    "schema": "Columns and types follow the clean_shard contract.",
}


def build_clean_shard(code_version: str, shards_per_run: int = 1) -> dg.AssetsDefinition:
    @dg.asset(
        deps=["doc_refined_shard", "chunk_refined_shard"],
        **shard_asset_settings("refine", shards_per_run),
        code_version=code_version,
        check_specs=shard_checks("clean_shard", CHECKS),
    )
    def clean_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                    tokenizer: TokenizerResource, policy: ProgramPolicy,
                    checks: CheckThresholds):
        """One row per raw document: the refined `text`, `status` (kept, dropped_doc,
        dropped_chunk, fallback_raw), `n_ops`, `n_errors`, `tokens_in`, `tokens_out` and the
        `refiner_version` that wrote its programs. `refinement_preview` shows a few dropped
        documents with their reason and removed lines with the call that removed them."""
        limits = checks.thresholds()

        def work(shard: str) -> ShardOutput:
            docs = storage.read("doc_refined_shard", shard)
            chunk_programs = storage.read("chunk_refined_shard", shard)
            clean = execute_shard(docs, chunk_programs, tokenizer.get(), policy.policy(),
                                  shard=shard)
            tokens_in, tokens_out = int(clean["tokens_in"].sum()), int(clean["tokens_out"].sum())
            statuses = dict(clean["status"].value_counts().iter_rows())
            missing = set(docs["id"]) - set(clean["id"])
            repeated = clean.group_by("id").len().filter(pl.col("len") > 1).height
            problems = schema_problems(clean, "clean_shard")
            return ShardOutput(clean, rows_in=docs.height, checks={
                "token_retention": token_retention(clean, limits.min_token_retention,
                                                   limits.max_token_retention),
                "no_empty_kept_text": no_empty_kept_text(clean),
                "unique_ids": unique_ids(clean),
                "every_document_once": CheckOutcome(
                    not missing and not repeated,
                    f"{len(missing)} documents missing, {repeated} repeated",
                    {"missing": len(missing), "repeated": repeated}),
                "schema": CheckOutcome(not problems, "; ".join(problems) or "conforms"),
            }, extra={
                "docs_kept": statuses.get("kept", 0) + statuses.get("fallback_raw", 0),
                "status_counts": statuses,
                "tokens_in": tokens_in, "tokens_out": tokens_out,
                "token_retention": round(tokens_out / tokens_in, 4) if tokens_in else 0.0,
                "program_errors": int(clean["n_errors"].sum()),
                "program_ops": int(clean["n_ops"].sum()),
                "refiner_version": ", ".join(sorted(set(clean["refiner_version"]))) or "none",
                "refinement_preview": refinement_preview(docs, chunk_programs, clean),
            })

        yield from run_shards(
            context, storage,
            settings=f"{code_version}|{tokenizer.fingerprint()}|{limits}",
            inputs=lambda shard: [storage.store.path("doc_refined_shard", shard),
                                  storage.store.path("chunk_refined_shard", shard)],
            work=work)

    return clean_shard
