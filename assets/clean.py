"""Stage 5: the programs executed; the refined text and status of every document."""

import time

import dagster as dg
import polars as pl

from prox_dagster.pipeline import execute_shard
from prox_dagster.quality import CheckOutcome, no_empty_kept_text, token_retention, unique_ids
from prox_dagster.shards import schema_problems
from resources import CheckThresholds, ProgramPolicy, ShardStorage, TokenizerResource

from .common import check_result, counts_table, shard_result
from .partitions import shards_partitions_def

CHECKS = [
    ("token_retention", "Tokens out / tokens in lies within [min, max]_token_retention (GX)."),
    ("no_empty_kept_text", "No kept document has empty text (GX)."),
    ("unique_ids", "Document ids are unique (GX)."),
    ("every_document_once", "Every doc_refined id appears exactly once, kept or with a status."),
    ("schema", "Columns and types follow the clean_shard contract."),
]


def build_clean_shard(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=shards_partitions_def,
        deps=["doc_refined_shard", "chunk_refined_shard"],
        group_name="refine",
        kinds={"polars", "parquet"},
        code_version=code_version,
        check_specs=[dg.AssetCheckSpec(name, asset="clean_shard", blocking=True,
                                       description=text) for name, text in CHECKS],
    )
    def clean_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                    tokenizer: TokenizerResource, policy: ProgramPolicy,
                    checks: CheckThresholds) -> dg.MaterializeResult:
        """One row per raw document: the refined `text`, `status` (kept, dropped_doc,
        dropped_chunk, fallback_raw), `n_ops`, `n_errors`, `tokens_in`, `tokens_out` and the
        `refiner_version` that wrote its programs."""
        shard = context.partition_key
        started = time.perf_counter()
        docs = storage.read("doc_refined_shard", shard)
        chunk_programs = storage.read("chunk_refined_shard", shard)
        clean = execute_shard(docs, chunk_programs, tokenizer.get(), policy.policy(),
                              shard=shard)
        path = storage.write(clean, "clean_shard", shard)
        limits = checks.thresholds()
        tokens_in, tokens_out = int(clean["tokens_in"].sum()), int(clean["tokens_out"].sum())
        statuses = dict(clean["status"].value_counts().iter_rows())
        counts = clean.group_by("id").len()
        missing = set(docs["id"]) - set(clean["id"])
        repeated = counts.filter(pl.col("len") > 1).height
        problems = schema_problems(clean, "clean_shard")
        results = [
            check_result("token_retention", token_retention(
                clean, limits.min_token_retention, limits.max_token_retention)),
            check_result("no_empty_kept_text", no_empty_kept_text(clean)),
            check_result("unique_ids", unique_ids(clean)),
            check_result("every_document_once", CheckOutcome(
                not missing and not repeated,
                f"{len(missing)} documents missing, {repeated} repeated",
                {"missing": len(missing), "repeated": repeated})),
            check_result("schema", CheckOutcome(not problems, "; ".join(problems) or "conforms")),
        ]
        return shard_result(
            context, path, started, rows_in=docs.height, rows_out=clean.height,
            check_results=results,
            docs_kept=statuses.get("kept", 0) + statuses.get("fallback_raw", 0),
            status_counts=counts_table(statuses, "status"),
            tokens_in=tokens_in, tokens_out=tokens_out,
            token_retention=round(tokens_out / tokens_in, 4) if tokens_in else 0.0,
            program_errors=int(clean["n_errors"].sum()),
            program_ops=int(clean["n_ops"].sum()),
            refiner_version=", ".join(sorted(set(clean["refiner_version"]))) or "none",
        )

    return clean_shard
