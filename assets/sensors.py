"""New crawl shards: a sensor adds a partition and a refinement run for each new raw file."""

import dagster as dg

from resources import RawSource

from .jobs import refine_shard_job
from .partitions import shards_partitions_def


@dg.sensor(job=refine_shard_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.STOPPED)
def raw_shard_sensor(context: dg.SensorEvaluationContext,
                     raw_source: RawSource) -> dg.SensorResult | dg.SkipReason:
    """Watches the raw folder; every shard file without a partition gets one, and a run."""
    known = set(context.instance.get_dynamic_partitions(shards_partitions_def.name))
    new = [key for key in raw_source.shards() if key not in known]
    if not new:
        return dg.SkipReason(f"no new shards in {raw_source.path}")
    context.log.info(f"{len(new)} new shards: {new[:10]}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"raw_shard:{key}")
                      for key in new],
        dynamic_partitions_requests=[shards_partitions_def.build_add_request(new)],
    )
