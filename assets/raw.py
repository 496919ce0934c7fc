"""Stage 1: the raw shard, read from the crawl and normalized to the ``raw_shard`` contract."""

import time

import dagster as dg

from prox_dagster.quality import CheckOutcome, unique_ids
from prox_dagster.shards import read_raw_shard, schema_problems
from resources import RawSource, ShardStorage

from .common import check_result, counts_table, shard_result
from .partitions import shards_partitions_def

QUARANTINE = "raw_quarantine"


@dg.asset(
    partitions_def=shards_partitions_def,
    group_name="ingest",
    kinds={"polars", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("unique_ids", asset="raw_shard", blocking=True,
                          description="Document ids are unique within the shard (GX)."),
        dg.AssetCheckSpec("schema", asset="raw_shard", blocking=True,
                          description="Columns and types follow the raw_shard contract."),
    ],
)
def raw_shard(context: dg.AssetExecutionContext, raw_source: RawSource,
              storage: ShardStorage) -> dg.MaterializeResult:
    """One row per document of the raw crawl file: `id` (stable, unique in the shard), `text`,
    `url`, `source`, `meta` (other fields as JSON). Records that cannot be documents (broken
    JSON, no `text`, repeated id) go to `raw_quarantine/{shard}.parquet` with their reason."""
    shard = context.partition_key
    started = time.perf_counter()
    source_file = raw_source.locate(shard)
    raw = read_raw_shard(source_file, shard)
    path = storage.write(raw.documents, "raw_shard", shard)
    quarantine_path = storage.write(raw.quarantine, QUARANTINE, shard)
    reasons = {k.split(":", 1)[1]: v for k, v in raw.stats.items() if k.startswith("quarantined:")}
    if raw.quarantine.height:
        context.log.warning(f"shard {shard}: {raw.quarantine.height} records quarantined "
                            f"({reasons}) -> {quarantine_path}")
    problems = schema_problems(raw.documents, "raw_shard")
    return shard_result(
        context, path, started,
        rows_in=raw.stats["lines"] - raw.stats["blank_lines"], rows_out=raw.documents.height,
        check_results=[
            check_result("unique_ids", unique_ids(raw.documents)),
            check_result("schema", CheckOutcome(not problems, "; ".join(problems) or "conforms")),
        ],
        source_file=str(source_file),
        documents=raw.documents.height,
        quarantined=raw.quarantine.height,
        quarantine_reasons=counts_table(reasons, "reason"),
        quarantine_path=dg.MetadataValue.path(quarantine_path),
        utf8_repaired=raw.stats["utf8_repaired"],
    )
