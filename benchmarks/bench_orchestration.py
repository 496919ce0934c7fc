"""Orchestration overhead per shard: tiny shards through every stage, one run per shard (what a
backfill without a BackfillPolicy does) against batched runs (``BackfillPolicy.multi_run``).

Shards hold two short documents each, so the time is Dagster's: run start, resource set-up, one
step per stage, event and check records. Both ways run in the same temporary instance
(in-process runs; the backfill daemon adds about a second of scheduling per run on top).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import dagster as dg

from prox_dagster import definitions
from prox_dagster.resources import CheckThresholds


def tiny_crawl(raw: Path, n: int) -> None:
    raw.mkdir(parents=True)
    for i in range(n):
        (raw / f"tiny.{i:05d}.jsonl").write_text(
            json.dumps({"text": "A short page about Python lists.\nThey hold items in order."})
            + "\n" + json.dumps({"text": "Menu | Home | About\nCopyright 2026"}) + "\n")


def run(n_shards: int = 48, shards_per_run: int = 16) -> dict:
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        results = {}
        for label, per_run in (("one_run_per_shard", 1), ("batched", shards_per_run)):
            data = Path(tmp) / label
            tiny_crawl(data / "raw", n_shards)
            # a tiny shard may keep nothing: the retention check is not what is measured
            defs = definitions.build_definitions(data_dir=data, shards_per_run=per_run,
                                                 checks=CheckThresholds(min_token_retention=0))
            keys = definitions.register_new_shards(defs, instance)
            # each way registers the same shard names afresh (removed again below)
            started = time.perf_counter()
            for i in range(0, len(keys), per_run):
                batch = keys[i:i + per_run]
                assert definitions.materialize_shards(defs, instance, batch[0],
                                                      batch[-1]).success
            seconds = time.perf_counter() - started
            results[label] = {"runs": -(-len(keys) // per_run),
                              "seconds": round(seconds, 2),
                              "seconds_per_shard": round(seconds / len(keys), 3)}
            for key in keys:
                instance.delete_dynamic_partition("shards", key)
    single, batched = results["one_run_per_shard"], results["batched"]
    return {"benchmark": "orchestration", "shards": n_shards, "shards_per_run": shards_per_run,
            **results,
            "batched_speedup": round(single["seconds"] / batched["seconds"], 2)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
