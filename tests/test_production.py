"""The production deployment, tested for real (issue 14, item 1): PostgreSQL storage, the queued
run coordinator, run retries, a gRPC code server, the daemon and the webserver as separate
processes, data and compute logs on S3 (moto's server: the one fake, at the S3 edge), configured
by ``deploy/production/dagster.yaml``.

A backfill of 24 shards in runs of 4, at most 3 runs at once, launched through the webserver's
GraphQL API as the UI does; one run's process is SIGKILLed in the middle of its doc refiner step.
The backfill completes by a retry, and every shard's files equal, byte for byte, those of an
undisturbed single-process run. Then the database itself goes away in the middle of a run: the
run worker fails naming it, and once it is back the run is marked failed and retried, keeping the
shards it had written.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from deployment import Dagster, Moto, Postgres, postgres_bin, production_instance_yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARDS, PER_RUN, RUNS_AT_ONCE = 24, 4, 3
ASSETS = ["raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
          "clean_shard", "tokenized_shard"]
KILLED_STEP = "doc_refined_shard"
BUCKET, LOGS = "prox-data", "prox-logs"
DATA, REFERENCE, CRAWL = f"s3://{BUCKET}/prox", f"s3://{BUCKET}/reference", f"s3://{BUCKET}/crawl"


def _missing() -> str | None:
    if postgres_bin() is None:
        return "needs PostgreSQL's server (apt-get install postgresql; .ci/run does)"
    if not (Path(sys.executable).parent / "moto_server").exists():
        return "needs moto's server (the dev extra has it)"
    for module in ("dagster_postgres", "dagster_aws"):
        if importlib.util.find_spec(module) is None:
            return f"needs {module} (the dev extra has it)"
    return None


@pytest.fixture(scope="module")
def deployment():
    if why := _missing():
        pytest.skip(why)
    import dagster as dg
    import s3fs

    from prox_dagster.sample import write_sample_crawl

    folder = Path(tempfile.mkdtemp(prefix="prox-deploy-"))
    postgres = Postgres(postgres_bin())
    moto = Moto(folder)
    home = folder / "dagster_home"
    # what one machine must change: the monitoring daemon polls often, so that the test waits
    # seconds, not minutes, for a dead run's pool slot to be freed
    config = production_instance_yaml(home, {"run_monitoring": {"poll_interval_seconds": 2}})
    env = {**postgres.env, **moto.env, "DAGSTER_HOME": str(home), "PROX_DATA_DIR": DATA,
           "PROX_RAW_DIR": CRAWL, "PROX_SHARDS_PER_RUN": str(PER_RUN),
           "PROX_LOG_BUCKET": LOGS, "DAGSTER_DISABLE_TELEMETRY": "1"}
    dagster = None
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        s3 = s3fs.S3FileSystem()
        s3.mkdir(BUCKET)
        s3.mkdir(LOGS)
        # four more for later tests, uploaded by them
        write_sample_crawl(folder / "crawl", n_shards=SHARDS + 4, docs_per_shard=24)
        for path in sorted((folder / "crawl" / "raw").iterdir())[:SHARDS]:
            s3.put_file(str(path), f"{BUCKET}/crawl/{path.name}")
        try:
            # the schema is created here, once, before three processes would race to create it
            with dg.DagsterInstance.get() as instance:
                dagster = Dagster(folder, {**os.environ})
                yield {"instance": instance, "s3": s3, "dagster": dagster,
                       "postgres": postgres, "config": config, "folder": folder}
        finally:
            if dagster is not None:
                dagster.close()
            moto.close()
            postgres.close()
            s3fs.S3FileSystem.clear_instance_cache()


def _files(s3, base: str) -> dict[str, str]:
    """sha256 of every object under ``base`` (relative names), as the bucket holds them now."""
    s3.invalidate_cache()  # s3fs caches listings: other processes wrote since
    root = base.removeprefix("s3://")
    return {name.removeprefix(root + "/"): hashlib.sha256(s3.cat(name)).hexdigest()
            for name in s3.find(root)}


def _run_worker_pid(events) -> int | None:
    for event in events:
        match = re.search(r"Started process for run \(pid: (\d+)\)", event.message or "")
        if match:
            return int(match.group(1))
    return None


def _step_intervals(instance, run) -> dict[str, tuple[float, float]]:
    """When each step of ``run`` ran: its start to its success or failure, or to the run's end
    for a step its process died in."""
    end_of_run = instance.get_run_record_by_id(run.run_id).end_time or time.time()
    starts, ends = {}, {}
    for event in instance.all_logs(run.run_id):
        kind = event.dagster_event.event_type_value if event.dagster_event else None
        if kind == "STEP_START":
            starts[event.step_key] = event.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[event.step_key] = event.timestamp
    return {step: (start, ends.get(step, end_of_run)) for step, start in starts.items()}


def _most_at_once(records) -> int:
    edges = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def test_a_backfill_on_postgres_survives_a_killed_run_worker(deployment):
    import dagster as dg
    import polars as pl
    import ui_tour
    from dagster._core.execution.backfill import BulkActionStatus

    from prox_dagster import definitions
    from prox_dagster.fingerprint import SIDECAR_SUFFIX

    instance, s3, dagster = deployment["instance"], deployment["s3"], deployment["dagster"]
    defs = definitions.build_definitions()
    keys = definitions.register_new_shards(defs, instance)
    assert len(keys) == SHARDS

    # the undisturbed single-process run the deployment's files must equal
    with dg.instance_for_test() as alone:
        reference = definitions.build_definitions(data_dir=REFERENCE, raw_dir=CRAWL)
        definitions.register_new_shards(reference, alone)
        assert definitions.materialize_shards(reference, alone, keys[0], keys[-1]).success

    launched = ui_tour.graphql(dagster.url, ui_tour.LAUNCH, {"params": {
        "assetSelection": [{"path": [a]} for a in ASSETS], "partitionNames": keys,
        "title": "production backfill"}})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    in_backfill = dg.RunsFilter(tags={"dagster/backfill": backfill_id})

    # SIGKILL one run's process once its doc refiner step has written its first shard
    killed = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        backfill = instance.get_backfill(backfill_id)
        if backfill.status != BulkActionStatus.REQUESTED:
            break
        if killed is None:
            for run in instance.get_runs(in_backfill):
                if run.status != dg.DagsterRunStatus.STARTED:
                    continue
                events = instance.all_logs(run.run_id)
                written = [e for e in events if e.step_key == KILLED_STEP and not e.dagster_event
                           and re.match(r"shard \S+: \d+ rows in", e.user_message)]
                pid = _run_worker_pid(events)
                if written and pid:
                    os.kill(pid, signal.SIGKILL)
                    killed = (run.run_id, written[0].user_message.split(":")[0].split()[1])
                    break
        time.sleep(0.2)
    logs = {name: dagster.log(name).read_text()[-4000:] for name in ("daemon", "grpc")}
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, logs)
    assert killed is not None, "no run was caught in its doc refiner step"
    killed_run, first_written = killed

    runs = instance.get_runs(in_backfill)
    by_id = {run.run_id: run for run in runs}
    # the killed run failed in the middle of its step: the step never finished
    assert by_id[killed_run].status == dg.DagsterRunStatus.FAILURE
    kinds = [(e.step_key, e.dagster_event.event_type_value) for e in instance.all_logs(killed_run)
             if e.dagster_event]
    assert (KILLED_STEP, "STEP_START") in kinds and (KILLED_STEP, "STEP_SUCCESS") not in kinds
    # ... and was retried by the daemon, which finished it
    [retry] = [r for r in runs if r.tags.get("dagster/parent_run_id") == killed_run]
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs if r.run_id != killed_run)

    # runs of 4 consecutive shards covering the backfill once; at most 3 at once, and some did run
    # together
    originals = [r for r in runs if "dagster/parent_run_id" not in r.tags]
    covered = []
    for run in originals:
        first = keys.index(run.tags["dagster/asset_partition_range_start"])
        last = keys.index(run.tags["dagster/asset_partition_range_end"])
        assert last - first + 1 == PER_RUN
        covered.extend(keys[first:last + 1])
    assert sorted(covered) == keys
    records = [instance.get_run_record_by_id(r.run_id) for r in runs]
    assert 2 <= _most_at_once(records) <= RUNS_AT_ONCE

    # no shard was computed by two runs at once
    ranges = {r.run_id: set(keys[keys.index(r.tags["dagster/asset_partition_range_start"]):
                                 keys.index(r.tags["dagster/asset_partition_range_end"]) + 1])
              for r in runs}
    steps = {r.run_id: _step_intervals(instance, r) for r in runs}
    for a in runs:
        for b in runs:
            if a.run_id >= b.run_id or not ranges[a.run_id] & ranges[b.run_id]:
                continue
            for step, (start, end) in steps[a.run_id].items():
                if step in steps[b.run_id]:
                    other_start, other_end = steps[b.run_id][step]
                    assert end <= other_start or other_end <= start, (step, a.run_id, b.run_id)

    # the retry took the shard written before the kill as it was, and computed the rest
    cached = {}
    for record in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(KILLED_STEP)), limit=1000).records:
        if record.run_id == retry.run_id:
            metadata = record.asset_materialization.metadata
            cached[record.asset_materialization.partition] = metadata["cached"].value
    assert cached[first_written] is True
    assert sum(cached.values()) < PER_RUN

    # every shard's files equal the single-process run's, byte for byte, and so do the refiner
    # programs kept for the next run (checkpoints); nothing missing, nothing extra: no temp
    # objects, no staging, no lease left behind (the run heartbeats and the audit's catalog
    # say when and what, so they differ)
    mine, theirs = _files(s3, DATA), _files(s3, REFERENCE)

    def compared(files: dict) -> dict:
        return {name: digest for name, digest in files.items()
                if not name.endswith(SIDECAR_SUFFIX)
                and name.split("/")[0] not in (".runs", ".catalog")}

    assert compared(mine) == compared(theirs)
    per_asset = Counter(name.split("/")[0] for name in mine if name.endswith(SIDECAR_SUFFIX))
    assert per_asset == {asset: SHARDS for asset in ASSETS}
    # (and the raw records the sample crawl's malformed lines became: quarantined, not lost)
    assert {name.split("/")[0] for name in mine} <= {*ASSETS, "raw_quarantine", ".checkpoints",
                                                     ".runs", ".catalog"}
    assert not [name for name in mine if "/.staging/" in name or name.startswith(".leases")]
    for key in keys:
        raw = pl.read_parquet(s3.open(f"{BUCKET}/prox/raw_shard/{key}.parquet"))
        clean = pl.read_parquet(s3.open(f"{BUCKET}/prox/clean_shard/{key}.parquet"))
        assert clean["id"].is_unique().all() and sorted(clean["id"]) == sorted(raw["id"])
    for asset in ASSETS:
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(keys), asset

    # the audit calls every shard current, and compute logs went to S3
    rows = definitions.lineage_report(defs, instance)
    assert [row["status"] for row in rows] == ["current"] * SHARDS
    assert s3.find(f"{LOGS}/dagster-logs/")


def _wait_for_log(instance, run_id: str, step: str, pattern: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = instance.all_logs(run_id)
        for event in events:
            if event.step_key == step and not event.dagster_event \
                    and re.match(pattern, event.user_message):
                return events, event
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} logged no {pattern!r} in {step}")


def test_postgres_going_away_fails_the_run_and_loses_no_written_shard(deployment):
    import dagster as dg
    import ui_tour
    from dagster._core.execution.backfill import BulkActionStatus

    from prox_dagster import definitions

    instance, s3, dagster = deployment["instance"], deployment["s3"], deployment["dagster"]
    postgres, folder = deployment["postgres"], deployment["folder"]
    for path in sorted((folder / "crawl" / "raw").iterdir())[SHARDS:]:
        s3.put_file(str(path), f"{BUCKET}/crawl/{path.name}")
    defs = definitions.build_definitions()
    keys = definitions.register_new_shards(defs, instance)[-4:]
    launched = ui_tour.graphql(dagster.url, ui_tour.LAUNCH, {"params": {
        "assetSelection": [{"path": [a]} for a in ASSETS], "partitionNames": keys,
        "title": "postgres goes away"}})["launchPartitionBackfill"]
    backfill_id = launched["backfillId"]
    deadline = time.monotonic() + 300
    runs = []
    while not runs and time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        time.sleep(0.5)
    [run] = runs
    events, _ = _wait_for_log(instance, run.run_id, KILLED_STEP, r"shard \S+: \d+ rows in")
    pid = _run_worker_pid(events)
    s3.invalidate_cache()
    written = {k: _files(s3, f"{DATA}/{KILLED_STEP}/{k}.parquet") for k in keys
               if s3.exists(f"{BUCKET}/prox/{KILLED_STEP}/{k}.provenance.json")}
    assert written and pid

    postgres.stop("immediate")
    deadline = time.monotonic() + 120
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), "the run worker outlived its database"
    # what the run worker said as it failed (its output is the code server's, as a pod's log
    # would be on Kubernetes): the database it could not reach
    said = dagster.log("grpc").read_text()
    assert "too many retries for DB connection" in said and "Connection refused" in said
    postgres.start()

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and \
            instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED:
        time.sleep(1)
    assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
    # once the database was back, the run was failed with the reason its process ended ...
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    messages = [e.message for e in instance.all_logs(run.run_id)]
    assert any(f"Run execution process for {run.run_id} unexpectedly exited" in m
               for m in messages), messages[-5:]
    # ... and retried; the shards written before the database went away were kept as they were
    [retry] = [r for r in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
               if r.tags.get("dagster/parent_run_id") == run.run_id]
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    for key, files in written.items():
        assert _files(s3, f"{DATA}/{KILLED_STEP}/{key}.parquet") == files
        metadata = definitions.latest_metadata(instance, KILLED_STEP, key)
        assert metadata["cached"] is True and metadata["fingerprint"]
    rows = {row["shard"]: row["status"] for row in definitions.lineage_report(defs, instance)}
    assert {rows[k] for k in keys} == {"current"}
    for asset in ASSETS:
        assert set(keys) <= instance.get_materialized_partitions(dg.AssetKey(asset)), asset
