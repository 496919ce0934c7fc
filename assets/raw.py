"""Stage 1: the raw shard, read from the crawl and normalized to the ``raw_shard`` contract."""

import dagster as dg

from prox_dagster.fingerprint import StageSettings
from prox_dagster.outputs import RawFile
from prox_dagster.shards import SCHEMAS, stream_raw_shard
from prox_dagster.store import local_copy
from prox_dagster.resources import CheckThresholds, RawSource, ShardStorage
from prox_dagster.resources.settings import stage_settings_of

from .common import (OWNERS, ShardJob, ShardOutput, run_shards, shard_asset_settings,
                     shard_checks, streamed)
from .partitions import shards_partitions_def

QUARANTINE = "raw_quarantine"
CRAWL_FILE = "raw_crawl_file"

raw_crawl_file = dg.AssetSpec(
    CRAWL_FILE, partitions_def=shards_partitions_def, group_name="ingest", owners=OWNERS,
    kinds={"jsonl"},
    description="The crawl file of each shard, outside Dagster's control. `raw_shard_sensor` "
                "observes it: its data version is the file's content hash (ETag on S3), so a "
                "file rewritten under the same name shows `raw_shard` stale.")
CHECKS = {"has_documents": "The crawl file gave at least one readable document.",
          "quarantine_share": "At most max_quarantine_share of the file's records are "
                              "quarantined."}


def build_raw_shard(expected: StageSettings, shards_per_run: int) -> dg.AssetsDefinition:
    @dg.asset(deps=[CRAWL_FILE],
              **shard_asset_settings("raw_shard", "ingest", shards_per_run,
                                     expected.code_version),
              check_specs=shard_checks("raw_shard", CHECKS))
    def raw_shard(context: dg.AssetExecutionContext, raw_source: RawSource,
                  storage: ShardStorage, checks: CheckThresholds):
        """One row per document of the raw crawl file: `id` (stable, unique in the shard),
        `text`, `url`, `source`, `meta` (other fields as JSON). Records that cannot be documents
        (broken JSON, no `text`, repeated id) go to `raw_quarantine/{shard}.parquet` with their
        reason; a shard with none has no quarantine file."""
        def work(job: ShardJob) -> ShardOutput:
            shard = job.shard
            source_file = raw_source.locate(shard)
            store = storage.store
            with local_copy(source_file) as local, \
                    job.staging.writer(SCHEMAS["raw_shard"]) as written, \
                    store.writer(QUARANTINE, shard, SCHEMAS[QUARANTINE],
                                 keep_empty=False) as rejected:
                stats = stream_raw_shard(local, written, rejected, shard,
                                         max_bytes=raw_source.max_shard_bytes,
                                         max_lines=raw_source.max_shard_lines)
            quarantine_path = store.path(QUARANTINE, shard)
            reasons = {k.split(":", 1)[1]: v for k, v in stats.items()
                       if k.startswith("quarantined:")}
            if rejected.rows:
                context.log.warning(f"shard {shard}: {rejected.rows} records "
                                    f"quarantined ({reasons}) -> {quarantine_path}")
            documents, quarantined = written.rows, rejected.rows
            return streamed(
                written, rows_in=stats["lines"] - stats["blank_lines"],
                observations={"documents": documents, "quarantined": quarantined,
                              "source": str(source_file), "reasons": reasons},
                extra={"source_file": str(source_file), "documents": documents,
                       "quarantined": quarantined, "quarantine_reasons": reasons,
                       # none when nothing was quarantined: no empty file per shard
                       **({"quarantine_path": quarantine_path} if quarantined else {}),
                       "utf8_repaired": stats["utf8_repaired"]})

        yield from run_shards(
            context, storage, work=work, limits=checks.settings(),
            raw_file=lambda shard: RawFile.at(raw_source.locate(shard)),
            expected=stage_settings_of("raw_shard", checks=checks))

    return raw_shard
