"""What a fully cached run costs: every shard current, so every stage reports ``cached``.

A backfill or *Materialize* launched from the UI runs the code location's asset job with its
executor. With Dagster's default (``multiprocess``) every step starts a Python process that
imports the code location; with ``in_process`` (``PROX_EXECUTOR``, now the default) the run's
steps share one process. Both launch the same run through ``execute_job`` (a real run of a
reconstructable job, as a run worker executes it) over the same cached shards.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prox_dagster import definitions  # noqa: E402
from prox_dagster.sample import write_sample_crawl  # noqa: E402

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def cached_job(executor: str) -> dg.JobDefinition:
    """The shard stages as the UI's asset job runs them, with ``executor``."""
    os.environ["PROX_EXECUTOR"] = executor
    defs = definitions.build_definitions()
    return defs.resolve_job_def("refine_shard_job")


def run(n_shards: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_sample_crawl(data, n_shards=n_shards, docs_per_shard=12)
        os.environ["PROX_DATA_DIR"] = str(data)
        (Path(tmp) / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(Path(tmp) / "home")) as instance:
            defs = definitions.build_definitions()
            keys = definitions.register_new_shards(defs, instance)
            tags = dict(zip(RANGE, (keys[0], keys[-1])))
            assert definitions.materialize_shards(defs, instance, keys[0], keys[-1]).success
            results = {}
            for executor in ("multiprocess", "in_process"):
                job = dg.build_reconstructable_job("bench_cached_run", "cached_job",
                                                   reconstructable_args=(executor,))
                started = time.perf_counter()
                with dg.execute_job(job, instance=instance, tags=tags) as result:
                    assert result.success
                    cached = all(e.materialization.metadata["cached"].value
                                 for e in result.get_asset_materialization_events())
                seconds = time.perf_counter() - started
                results[executor] = {"seconds": round(seconds, 2), "all_cached": cached}
    return {"benchmark": "cached_run", "shards": n_shards, "stages": 6, **results,
            "in_process_speedup": round(results["multiprocess"]["seconds"]
                                        / results["in_process"]["seconds"], 2)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
