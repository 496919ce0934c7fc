"""At most one in-flight step computes a shard, across runs: the store's lease."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from prox_dagster import definitions, fingerprint
from prox_dagster.sample import write_sample_crawl
from prox_dagster.shards import ShardError
from prox_dagster.store import ShardStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHARD = "sample-crawl.00000"
ROOT = Path(__file__).resolve().parent.parent


def test_a_live_holder_is_waited_for_and_a_dead_one_taken_over(tmp_path):
    store = ShardStore(tmp_path)
    live = {"run-a"}
    order = []

    def second():
        with store.lease("clean_shard", SHARD, "run-b", live.__contains__, poll_s=0.05,
                         waiting=lambda holder: order.append(f"waiting for {holder}")):
            order.append("b computes")

    with store.lease("clean_shard", SHARD, "run-a", live.__contains__):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        order.append("a done")
    thread.join(timeout=10)
    assert order == ["waiting for run-a", "a done", "b computes"]

    # run-c died holding the lease (its lock is left behind): the next run takes it over
    lock = tmp_path / ".leases" / "clean_shard" / f"{SHARD}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text('{"owner": "run-c"}')
    with store.lease("clean_shard", SHARD, "run-d", live.__contains__):
        assert '"run-d"' in lock.read_text()
    assert not lock.exists()

    with store.lease("clean_shard", SHARD, "run-a", live.__contains__):
        with pytest.raises(ShardError, match="being computed by run-a"):
            with store.lease("clean_shard", SHARD, "run-e", live.__contains__, wait_s=0.2,
                             poll_s=0.05):
                pass


RUN = """
import json, sys
import dagster as dg
from prox_dagster import definitions
defs = definitions.build_definitions(data_dir=sys.argv[1])
result = definitions.materialize_shard(defs, dg.DagsterInstance.get(), sys.argv[2])
print(json.dumps({"run_id": result.run_id, "success": result.success, "computed": [
    e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    if not e.materialization.metadata["cached"].value]}))
"""


def test_two_concurrent_runs_of_one_shard_compute_each_stage_once(tmp_path):
    """Two runs of the same shard at once, each in its own process on one instance (as two
    run workers are): every stage is computed by exactly one of them; the other waits for it
    and finds it current."""
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    write_sample_crawl(data, n_shards=1, docs_per_shard=12)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        definitions.register_new_shards(definitions.build_definitions(data_dir=data), instance)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    workers = [subprocess.Popen([sys.executable, "-c", RUN, str(data), SHARD], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                cwd=ROOT) for _ in range(2)]
    results = [json.loads(worker.communicate(timeout=600)[0].strip().splitlines()[-1])
               for worker in workers]
    assert [r["success"] for r in results] == [True, True]
    for stage in fingerprint.STAGES:
        computed = [r["run_id"] for r in results if stage in r["computed"]]
        assert len(computed) == 1, (stage, results)
        assert fingerprint.read_sidecar(ShardStore(data), stage, SHARD)["run_id"] == computed[0]
    assert not list((data / ".leases").rglob("*.lock"))
