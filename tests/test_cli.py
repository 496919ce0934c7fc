"""The README's main command, run as a user runs it: a subprocess with its own DAGSTER_HOME."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from manifests import read_manifest
from dagster._core.instance.ref import InstanceRef

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_demo_materializes_every_asset_in_a_real_instance(tmp_path):
    home, data = tmp_path / "home", tmp_path / "data"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run(
        [sys.executable, "-m", "prox_dagster.cli", "demo", "--data-dir", str(data),
         "--dagster-home", str(home)],
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the README's table, row for row: the sample crawl and its tokenizer ship with the
    # package, so every fresh clone prints the same numbers
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line.rstrip() for line in readme.splitlines() if line.startswith(" sample-crawl")]
    assert len(rows) == 4
    assert [line.rstrip() for line in proc.stdout.splitlines()
            if line.startswith(" sample-crawl")] == rows
    totals = next(line for line in readme.splitlines() if line.startswith("pre-training set:"))
    assert totals.split(" -> ")[0] in proc.stdout
    assert (home / "dagster.yaml").read_text().count("default_limit: 1") == 1

    manifest = read_manifest(data)
    assert manifest["total_documents"] > 0 and len(manifest["shards"]) == 4

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_runs()
        assert len(runs) == 5 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert sorted(instance.get_dynamic_partitions("shards")) == [
            f"sample-crawl.{i:05d}" for i in range(4)]
        for asset in ("raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
                      "clean_shard", "tokenized_shard"):
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
            assert len(records) == 4, asset

    again = subprocess.run(proc.args, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0 and "0 new partitions" in again.stdout
