"""New crawl shards and stale ones: a sensor registers new raw files, a schedule refines every
shard that is new or was refined by another refiner. Both request runs of ``refine_shard_job``
over contiguous ranges of at most ``shards_per_run`` shards, as backfills do."""

import json
import os

import dagster as dg

from resources import RawSource

from .audit import REFINED, latest_by_partition, metadata_value
from .jobs import refine_shard_job
from .partitions import shards_partitions_def

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def range_requests(keys: list[str], shards_per_run: int, reason: str) -> list[dg.RunRequest]:
    """One run per batch of consecutive partition keys (``keys`` in partition order)."""
    requests = []
    for i in range(0, len(keys), max(1, shards_per_run)):
        batch = keys[i:i + shards_per_run]
        requests.append(dg.RunRequest(
            run_key=f"{reason}:{batch[0]}..{batch[-1]}",
            tags={RANGE_START: batch[0], RANGE_END: batch[-1], "prox/trigger": reason}))
    return requests


def build_raw_shard_sensor(shards_per_run: int) -> dg.SensorDefinition:
    @dg.sensor(job=refine_shard_job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def raw_shard_sensor(context: dg.SensorEvaluationContext,
                         raw_source: RawSource) -> dg.SensorResult | dg.SkipReason:
        """Watches the raw folder or S3 prefix. The cursor is the (modification time, key) of the newest
        shard registered: every file after it without a partition gets one, at most
        `max_shards_per_tick` per tick, and runs refine them in batches."""
        cursor = json.loads(context.cursor) if context.cursor else {"mtime_ns": 0, "key": ""}
        mark = (cursor["mtime_ns"], cursor["key"])
        known = set(context.instance.get_dynamic_partitions(shards_partitions_def.name))
        files = sorted((mtime, key) for key, (_, mtime) in raw_source.shards().items())
        new = [(mtime, key) for mtime, key in files if (mtime, key) > mark and key not in known]
        if not new:
            return dg.SkipReason(f"no new shards in {raw_source.path}")
        batch = new[:raw_source.max_shards_per_tick]
        keys = [key for _, key in batch]
        context.log.info(f"{len(keys)} new shards ({len(new) - len(keys)} left for the next "
                         f"ticks): {keys[:10]}")
        return dg.SensorResult(
            run_requests=range_requests(keys, shards_per_run, "new"),
            dynamic_partitions_requests=[shards_partitions_def.build_add_request(keys)],
            cursor=json.dumps({"mtime_ns": batch[-1][0], "key": batch[-1][1]}))

    return raw_shard_sensor


def shards_to_refine(instance: dg.DagsterInstance, refiner_version: str) -> list[str]:
    """Shards (in partition order) never tokenized, or refined by another refiner version."""
    tokenized = latest_by_partition(instance, "tokenized_shard")
    refined = {level: latest_by_partition(instance, asset) for level, asset in REFINED.items()}

    return [shard for shard in instance.get_dynamic_partitions(shards_partitions_def.name)
            if shard not in tokenized
            or any(metadata_value(refined[level].get(shard), "refiner_version")
                   != refiner_version for level in REFINED)]


def build_refine_schedule(refiner_version: str, shards_per_run: int) -> dg.ScheduleDefinition:
    @dg.schedule(job=refine_shard_job,
                 cron_schedule=os.environ.get("PROX_REFINE_CRON", "0 * * * *"),
                 default_status=dg.DefaultScheduleStatus.STOPPED)
    def refine_schedule(context: dg.ScheduleEvaluationContext):
        """Every shard that is new or stale against the current refiner, in batched runs (the
        cron comes from `PROX_REFINE_CRON`, hourly by default). Current shards cost nothing:
        their stages report `cached`."""
        todo = shards_to_refine(context.instance, refiner_version)
        if not todo:
            return dg.SkipReason("every shard is refined by the current refiner")
        # a run covers a contiguous range of partitions: split where the list skips shards
        order = {key: i for i, key in
                 enumerate(context.instance.get_dynamic_partitions(shards_partitions_def.name))}
        requests, run = [], [todo[0]]
        for key in todo[1:]:
            if order[key] == order[run[-1]] + 1 and len(run) < shards_per_run:
                run.append(key)
            else:
                requests.extend(range_requests(run, shards_per_run, "scheduled"))
                run = [key]
        requests.extend(range_requests(run, shards_per_run, "scheduled"))
        context.log.info(f"{len(todo)} shards to refine in {len(requests)} runs")
        scheduled_at = context.scheduled_execution_time.isoformat(timespec="seconds")
        return [dg.RunRequest(run_key=f"{r.run_key}@{scheduled_at}", tags=r.tags)
                for r in requests]

    return refine_schedule
