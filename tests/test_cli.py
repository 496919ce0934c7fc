"""The README's main command, run as a user runs it: a subprocess with its own DAGSTER_HOME."""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

pytestmark = pytest.mark.integration


def test_demo_materializes_every_asset_in_a_real_instance(tmp_path):
    home, data = tmp_path / "home", tmp_path / "data"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run(
        [sys.executable, "-m", "prox_dagster.cli", "demo", "--data-dir", str(data),
         "--dagster-home", str(home), "--shards", "2", "--docs", "8"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("8/8") == 2
    assert "sample-crawl.00000" in proc.stdout and "sample-crawl.00001" in proc.stdout
    assert (home / "dagster.yaml").read_text().count("default_limit: 1") == 1

    manifest = json.loads((data / "pretraining_set" / "manifest.json").read_text())
    assert manifest["total_documents"] > 0 and len(manifest["shards"]) == 2

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_runs()
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert sorted(instance.get_dynamic_partitions("shards")) == ["sample-crawl.00000",
                                                                     "sample-crawl.00001"]
        for asset in ("raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
                      "clean_shard", "tokenized_shard"):
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
            assert len(records) == 2, asset

    again = subprocess.run(proc.args, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "0 new partitions" in again.stdout
