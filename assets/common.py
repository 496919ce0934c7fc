"""What every shard asset reports: metadata, check results and progress logs."""

import time
from collections.abc import Iterable, Mapping

import dagster as dg

from prox_dagster.quality import CheckOutcome
from prox_dagster.shards import file_sha256

from .partitions import shards_partitions_def


def refiner_asset_settings(code_version: str, op_tags: dict | None) -> dict:
    """What both refiner assets share: shard partitions, the ``gpu`` pool, the refiner version
    as code version and the refiner's per-step resource requests."""
    return {"partitions_def": shards_partitions_def, "group_name": "refine",
            "kinds": {"polars", "parquet"}, "pool": "gpu", "code_version": code_version,
            "op_tags": op_tags or None}


def shard_result(context: dg.AssetExecutionContext, path: str, started: float, *,
                 rows_in: int, rows_out: int, check_results: Iterable[dg.AssetCheckResult] = (),
                 **extra) -> dg.MaterializeResult:
    """The materialization of one shard: rows, duration, throughput, path, content hash."""
    duration = time.perf_counter() - started
    digest = file_sha256(path)
    metadata = {
        "shard": context.partition_key,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "duration_s": round(duration, 3),
        "rows_per_s": round(rows_in / duration, 1) if duration > 0 else 0.0,
        "path": dg.MetadataValue.path(path),
        "sha256": digest,
        **extra,
    }
    context.log.info(f"shard {context.partition_key}: {rows_in} rows in, {rows_out} out, "
                     f"{duration:.2f}s -> {path}")
    return dg.MaterializeResult(metadata=metadata, check_results=list(check_results),
                                data_version=dg.DataVersion(digest[:16]))


def check_result(name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, passed=outcome.passed,
                               description=outcome.description, metadata=outcome.metadata)


def counts_table(counts: Mapping[str, int], key: str = "value") -> dg.MetadataValue:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items()))
    return dg.MetadataValue.md(f"| {key} | count |\n|---|---|\n{rows}" if rows else "(none)")


def progress_logger(context: dg.AssetExecutionContext, what: str):
    """A progress callback that logs about every tenth of the work."""
    state = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if total and done / total >= state["next"]:
            context.log.info(f"{what}: {done}/{total}")
            state["next"] = done / total + 0.1

    return report


def refiner_metadata(refiner, asset_code_version: str | None,
                     context: dg.AssetExecutionContext) -> dict:
    if asset_code_version and refiner.version not in asset_code_version:
        context.log.warning(
            f"refiner {refiner.version} differs from the code version {asset_code_version} "
            "these definitions were loaded with; reload the code location so staleness is right")
    return {"refiner_version": refiner.version, "refiner_backend": refiner.backend,
            "model_id": refiner.model_id}
