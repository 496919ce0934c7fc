"""Stage 1: the raw shard, read from the crawl and normalized to the ``raw_shard`` contract."""

import dagster as dg

from prox_dagster.quality import CheckOutcome, unique_ids
from prox_dagster.shards import read_raw_shard, schema_problems
from prox_dagster.store import local_copy
from resources import RawSource, ShardStorage

from .common import ShardOutput, run_shards, shard_asset_settings, shard_checks

QUARANTINE = "raw_quarantine"
CHECKS = {"unique_ids": "Document ids are unique within the shard (GX).",
          "schema": "Columns and types follow the raw_shard contract."}


def build_raw_shard(shards_per_run: int) -> dg.AssetsDefinition:
    @dg.asset(**shard_asset_settings("ingest", shards_per_run),
              check_specs=shard_checks("raw_shard", CHECKS))
    def raw_shard(context: dg.AssetExecutionContext, raw_source: RawSource,
                  storage: ShardStorage):
        """One row per document of the raw crawl file: `id` (stable, unique in the shard),
        `text`, `url`, `source`, `meta` (other fields as JSON). Records that cannot be documents
        (broken JSON, no `text`, repeated id) go to `raw_quarantine/{shard}.parquet` with their
        reason."""

        def work(shard: str) -> ShardOutput:
            source_file = raw_source.locate(shard)
            with local_copy(source_file) as local:
                raw = read_raw_shard(local, shard)
            storage.store.write(raw.quarantine, QUARANTINE, shard)
            quarantine_path = storage.store.path(QUARANTINE, shard)
            reasons = {k.split(":", 1)[1]: v for k, v in raw.stats.items()
                       if k.startswith("quarantined:")}
            if raw.quarantine.height:
                context.log.warning(f"shard {shard}: {raw.quarantine.height} records "
                                    f"quarantined ({reasons}) -> {quarantine_path}")
            problems = schema_problems(raw.documents, "raw_shard")
            return ShardOutput(
                raw.documents, rows_in=raw.stats["lines"] - raw.stats["blank_lines"],
                checks={"unique_ids": unique_ids(raw.documents),
                        "schema": CheckOutcome(not problems, "; ".join(problems) or "conforms")},
                extra={"source_file": str(source_file), "documents": raw.documents.height,
                       "quarantined": raw.quarantine.height, "quarantine_reasons": reasons,
                       "quarantine_path": quarantine_path,
                       "utf8_repaired": raw.stats["utf8_repaired"]})

        yield from run_shards(context, storage, settings="raw",
                              inputs=lambda shard: [raw_source.locate(shard)], work=work)

    return raw_shard
