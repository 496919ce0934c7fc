"""Automation: a sensor registers new raw files as shards, a schedule refines every shard that is
not current. Both request runs of ``refine_shard_job`` over contiguous ranges of at most
``shards_per_run`` shards, as backfills do.

What is "current" is the lineage audit's answer (``prox_dagster.fingerprint``): the schedule
never requests a shard that is current, covered by a queued or running run, or whose current
output failed a blocking check (that waits until its inputs or settings change)."""

import base64
import json
import time
import zlib

import dagster as dg
import polars as pl

from prox_dagster import environment
from prox_dagster.catalog import Evaluation
from prox_dagster.stages import STAGES
from prox_dagster.store import RawEntry
from prox_dagster.resources import (CheckThresholds, ProgramPolicy, RawSource, RefinerResource,
                                    ShardStorage, TokenizerResource)

from .audit import (MAX_TICK_CHECK_REPORTS, RANGE_END, RANGE_START, TICK_REPORT_SECONDS,
                    evaluate, expected_of, report_current)
from .jobs import refine_shard_job
from .partitions import shards_partitions_def
from .raw import CRAWL_FILE

REQUESTED = ("stale", "missing")  # audit statuses the schedule refines
# the seconds of judging after which a tick starts no more (what bounds a tick on a slow store,
# S3 or a network disk, under Dagster's 60 s tick timeout; its read budget is
# PROX_TICK_READ_BUDGET)
TICK_JUDGE_SECONDS = 20.0
TICK_BLOCK = 1000  # files the sensor handles between two looks at the clock


def range_requests(keys: list[str], order: list[str], shards_per_run: int, reason: str,
                   suffix: str = "", stages: list[str] | None = None) -> list[dg.RunRequest]:
    """One run per batch of at most ``shards_per_run`` keys that are consecutive in the
    partition ``order`` (a run covers a contiguous range of partitions); ``stages``: the
    stages the runs materialize (with their checks), all by default."""
    position = {key: i for i, key in enumerate(order)}
    batches: list[list[str]] = []
    for key in sorted(keys, key=position.__getitem__):
        if batches and position[key] == position[batches[-1][-1]] + 1 \
                and len(batches[-1]) < max(1, shards_per_run):
            batches[-1].append(key)
        else:
            batches.append([key])
    selection = [dg.AssetKey(stage) for stage in stages] if stages else None
    return [dg.RunRequest(run_key=f"{reason}:{batch[0]}..{batch[-1]}{suffix}",
                          tags={RANGE_START: batch[0], RANGE_END: batch[-1],
                                "prox/trigger": reason},
                          asset_selection=selection)
            for batch in batches]


def _encode(state: dict) -> str:
    return base64.b64encode(zlib.compress(json.dumps(state, sort_keys=True).encode())).decode()


def _decode(cursor: str | None) -> dict:
    """``{"registered": [keys], "seen": {key: modification time}}``."""
    try:
        state = json.loads(zlib.decompress(base64.b64decode(cursor or "")))
    except (ValueError, zlib.error):
        state = {}  # none yet, or an earlier format: the registered partitions say what is new
    return {"registered": state.get("registered", []), "seen": state.get("seen", {})}


def observation(key: str, entry: RawEntry) -> dg.AssetObservation:
    """The crawl file's version (size and modification time, or ETag) as the data version of
    ``raw_crawl_file`` for shard ``key``: read from the listing, nothing hashed in a tick."""
    return dg.AssetObservation(
        asset_key=CRAWL_FILE, partition=key,
        metadata={"location": entry.location},
        tags={"dagster/data_version": f"v:{entry.version}",
              "dagster/data_version_is_user_provided": "true"})


def first_stale_stages(evaluation: Evaluation, rows: pl.DataFrame) -> dict[str, list[str]]:
    """The shards of ``rows`` (of ``evaluation``) by their first stage that is not current."""
    found: dict[str, list[str]] = {}
    for row in rows.iter_rows(named=True):
        states = evaluation.stage_states(row)
        first = next((stage for stage in STAGES if states[stage][0] != "current"), STAGES[0])
        found.setdefault(first, []).append(row["shard"])
    return found


def build_raw_shard_sensor(shards_per_run: int) -> dg.SensorDefinition:
    @dg.sensor(job=refine_shard_job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Registers every raw file that has no shard partition yet (whatever "
                           "its modification time: files moved in with mv, rsync -a or cp -p "
                           "count), requests runs that refine them in batches, and observes "
                           "each crawl file whose version (size and modification time, or "
                           "ETag) changed, from one listing of the folder: nothing is read.")
    def raw_shard_sensor(context: dg.SensorEvaluationContext,
                         raw_source: RawSource) -> dg.SensorResult | dg.SkipReason:
        """The cursor holds every key the sensor registered (so a partition an operator deleted
        is not brought back) and the version it last observed per file; at most
        `max_shards_per_tick` new shards per tick, oldest first, and at most
        `max_observations_per_tick` observations (the rest at the next ticks)."""
        started = time.monotonic()
        state = _decode(context.cursor)
        registered, seen = set(state["registered"]), state["seen"]
        order = context.instance.get_dynamic_partitions(shards_partitions_def.name)
        known = set(order)
        files, refused = raw_source.listing()
        if refused:
            context.log.warning(
                f"{len(refused)} raw files or shard keys are not registered or read until "
                "fixed: "
                + "; ".join(reason for _, reason in sorted(refused.items())[:20]))
        new = [key for _, key in sorted((entry.modified, key) for key, entry in files.items())
               if key not in known and key not in registered]
        deadline = started + raw_source.max_tick_seconds

        def in_time(items: list[str], limit: int) -> list[str]:
            # blocks until the count or the tick's time runs out (at least one block, so
            # that registration always moves)
            taken: list[str] = []
            for start in range(0, min(len(items), limit), TICK_BLOCK):
                if taken and time.monotonic() > deadline:
                    break
                taken += items[start:min(start + TICK_BLOCK, limit)]
            return taken

        keys = in_time(new, raw_source.max_shards_per_tick)
        changed = [key for key in [*keys, *sorted(known & set(files))]
                   if seen.get(key) != files[key].version]
        observe = in_time(changed, raw_source.max_observations_per_tick)
        if len(changed) > len(observe):
            context.log.info(f"{len(changed) - len(observe)} changed crawl files are observed "
                             "at the next ticks")
        if not keys and not observe:
            return dg.SkipReason(f"no new or changed shards in {raw_source.path}")
        if keys:
            context.log.info(f"{len(keys)} new shards ({len(new) - len(keys)} left for the "
                             f"next ticks, {time.monotonic() - started:.1f}s): {keys[:10]}")
        seen.update({key: files[key].version for key in observe})
        return dg.SensorResult(
            run_requests=range_requests(keys, order + keys, shards_per_run, "new"),
            dynamic_partitions_requests=[shards_partitions_def.build_add_request(keys)]
            if keys else [],
            asset_events=[observation(key, files[key]) for key in observe],
            cursor=_encode({"registered": sorted(registered | set(keys)), "seen": seen}))

    return raw_shard_sensor


def build_refine_schedule(shards_per_run: int) -> dg.ScheduleDefinition:
    @dg.schedule(job=refine_shard_job,
                 cron_schedule=environment.value("PROX_REFINE_CRON"),
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Refines every shard that is stale or missing against the loaded "
                             "settings, in batched runs from each shard's first stage that is "
                             "not current (cron: PROX_REFINE_CRON, hourly by "
                             "default). Skips current shards, shards a queued or running run "
                             "covers, and shards whose current output failed a blocking check. "
                             "Judges at most PROX_TICK_READ_BUDGET sidecar reads a tick, "
                             "for at most 20 s (the rest at the next), and tells up to 200 "
                             "stages' `current` checks what changed, for at most 1.5 s (the "
                             "lineage audit tells them all).")
    def refine_schedule(context: dg.ScheduleEvaluationContext, storage: ShardStorage,
                        raw_source: RawSource, refiner: RefinerResource, policy: ProgramPolicy,
                        tokenizer: TokenizerResource, checks: CheckThresholds):
        evaluation, running = evaluate(
            context.instance, storage, raw_source, expected_of(refiner, policy, tokenizer, checks),
            read_budget=environment.integer("PROX_TICK_READ_BUDGET"),
            seconds=TICK_JUDGE_SECONDS,
            log=context.log.warning)
        reported = report_current(context.instance, storage, evaluation,
                                  limit=MAX_TICK_CHECK_REPORTS, seconds=TICK_REPORT_SECONDS)
        todo = evaluation.rows.filter(
            pl.col("status").is_in(REQUESTED) & ~pl.col("shard").is_in(list(running)))
        later = (f"; {len(evaluation.deferred)} shards not judged yet (tick budget), at the "
                 "next tick" if evaluation.deferred else "")
        context.log.info(f"judged {evaluation.stats['judged']} shards, reused "
                         f"{evaluation.stats['reused']} ({evaluation.stats['seconds']}s), "
                         f"{reported} current checks reported{later}")
        if todo.is_empty():
            return dg.SkipReason("every shard is current, running, or failed a blocking check "
                                 f"with unchanged inputs and settings{later}")
        scheduled_at = context.scheduled_execution_time.isoformat(timespec="seconds")
        # a run materializes a shard from its first stage that is not current on: the stages
        # before it are current and would only be reported as cached
        requests = []
        for first, shards in sorted(first_stale_stages(evaluation, todo).items(),
                                    key=lambda item: STAGES.index(item[0])):
            requests += range_requests(shards, evaluation.shards, shards_per_run, "scheduled",
                                       f"@{scheduled_at}:{first}",
                                       STAGES[STAGES.index(first):])
        context.log.info(f"{todo.height} shards to refine in {len(requests)} runs")
        return requests

    return refine_schedule
