"""New crawls refined automatically: the raw-shard sensor's cursor, batches and patterns, and
the schedule that refines new and stale shards."""

import datetime as dt
import os

import dagster as dg
import pytest

from prox_dagster.assets.sensors import RANGE_END, RANGE_START, build_raw_shard_sensor
from prox_dagster import definitions
from prox_dagster.sample import write_sample_crawl
from prox_dagster.stages import STAGES
from prox_dagster.resources import ClassifierSettings, RawSource, RefinerResource

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.timezone.utc)


def drop(folder, name, mtime):
    path = folder / name
    path.write_text('{"text": "a page of a new crawl"}\n')
    os.utime(path, ns=(mtime, mtime))
    return path


def raw_folder(tmp_path, names):
    """A raw folder holding ``names``, arrived one second apart in that order."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for i, name in enumerate(names):
        drop(raw, name, 1_000_000_000 * (i + 1))
    return raw


def tick(sensor, instance, source, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"raw_source": source}) as context:
        result = sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name,
                                            list(request.partition_keys))
    return result


def test_a_sensor_tick_out_of_time_registers_one_block_and_leaves_the_rest(tmp_path, instance,
                                                                          monkeypatch):
    from prox_dagster.assets import sensors

    monkeypatch.setattr(sensors, "TICK_BLOCK", 2)
    raw = raw_folder(tmp_path, [f"s.{i:05d}.jsonl" for i in range(5)])
    # no time at all: each tick still handles one block (registration always moves)
    source = RawSource(path=str(raw), max_tick_seconds=0)
    sensor = build_raw_shard_sensor(shards_per_run=16)
    cursor, registered = None, []
    for expected in (["s.00000", "s.00001"], ["s.00002", "s.00003"], ["s.00004"]):
        result = tick(sensor, instance, source, cursor)
        assert list(result.dynamic_partitions_requests[0].partition_keys) == expected
        # every new shard is observed with its registration
        assert [e.partition for e in result.asset_events] == expected
        registered += expected
        [run] = result.run_requests
        assert (run.tags[RANGE_START], run.tags[RANGE_END]) == (expected[0], expected[-1])
        cursor = result.cursor
    assert isinstance(tick(sensor, instance, source, cursor), dg.SkipReason)
    # with time, one tick takes them all
    drop(raw, "t.00000.jsonl", 9_000_000_000)
    drop(raw, "t.00001.jsonl", 9_000_000_001)
    drop(raw, "t.00002.jsonl", 9_000_000_002)
    result = tick(sensor, instance, RawSource(path=str(raw)), cursor)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == \
        ["t.00000", "t.00001", "t.00002"]


def test_sensor_registers_in_bounded_batches_late_files_too_and_never_re_adds(tmp_path,
                                                                            instance):
    raw = raw_folder(tmp_path, ["c.00003.jsonl", "a.00001.jsonl", "b.00002.jsonl.gz",
                                "d.00004.jsonl", "e.00005.jsonl"])
    (raw / "b.00002.jsonl.gz").write_bytes(b"")  # any raw suffix counts, content is not read
    os.utime(raw / "b.00002.jsonl.gz", ns=(3_000_000_000, 3_000_000_000))
    (raw / "notes.txt").write_text("not a shard")
    source = RawSource(path=str(raw), max_shards_per_tick=2)
    sensor = build_raw_shard_sensor(shards_per_run=2)

    first = tick(sensor, instance, source)
    # oldest first: registration order follows arrival, not names
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["c.00003", "a.00001"]
    [run] = first.run_requests
    assert (run.tags[RANGE_START], run.tags[RANGE_END]) == ("c.00003", "a.00001")
    second = tick(sensor, instance, source, first.cursor)
    assert list(second.dynamic_partitions_requests[0].partition_keys) == ["b.00002", "d.00004"]
    third = tick(sensor, instance, source, second.cursor)
    assert list(third.dynamic_partitions_requests[0].partition_keys) == ["e.00005"]
    assert isinstance(tick(sensor, instance, source, third.cursor), dg.SkipReason)

    # an operator removes a bad shard's partition: the sensor does not bring it back
    instance.delete_dynamic_partition("shards", "a.00001")
    assert isinstance(tick(sensor, instance, source, third.cursor), dg.SkipReason)
    # a file moved in with its old modification time (mv, rsync -a, cp -p) is new all the same
    drop(raw, "f.00006.jsonl", 500_000_000)
    later = tick(sensor, instance, source, third.cursor)
    assert list(later.dynamic_partitions_requests[0].partition_keys) == ["f.00006"]
    assert instance.get_dynamic_partitions("shards") == ["c.00003", "b.00002", "d.00004",
                                                         "e.00005", "f.00006"]


def test_file_patterns_choose_which_files_are_shards(tmp_path, instance):
    raw = raw_folder(tmp_path, ["crawl-2026-10.00001.jsonl", "crawl-2026-11.00001.jsonl",
                                "scratch.00001.jsonl"])
    source = RawSource(path=str(raw), patterns=["crawl-2026-11.*", "crawl-2027-*"])
    result = tick(build_raw_shard_sensor(16), instance, source)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["crawl-2026-11.00001"]
    with pytest.raises(Exception, match="matching"):
        source.locate("scratch.00001")


def test_two_files_with_one_key_are_reported_and_every_other_shard_flows(tmp_path, instance):
    from prox_dagster.assets.audit import audit_rows, expected_of
    from prox_dagster.resources import (CheckThresholds, ProgramPolicy, RefinerResource,
                                        ShardStorage, TokenizerResource)

    raw = raw_folder(tmp_path, ["a.00001.jsonl", "y.00002.jsonl", "y.00002.parquet",
                                "z.00003.jsonl"])
    source = RawSource(path=str(raw))
    sensor = build_raw_shard_sensor(16)
    result = tick(sensor, instance, source)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["a.00001", "z.00003"]
    # an operator registers it by hand: its audit row says why it cannot run, the others are
    # merely missing (not yet refined)
    instance.add_dynamic_partitions("shards", ["y.00002"])
    rows = {row["shard"]: row for row in audit_rows(
        instance, ShardStorage(base=str(tmp_path / "data")), source,
        expected_of(RefinerResource(), ProgramPolicy(), TokenizerResource(), CheckThresholds()))}
    assert rows["y.00002"]["status"] == "failed"
    assert "y.00002.jsonl, y.00002.parquet" in rows["y.00002"]["reason"]
    assert rows["a.00001"]["status"] == rows["z.00003"]["status"] == "missing"
    with pytest.raises(Exception, match="has 2 raw files"):
        source.locate("y.00002")
    assert source.locate("a.00001").endswith("a.00001.jsonl")


def evaluate(schedule, instance, defs):
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW,
                                   resources=defs.resources) as context:
        return schedule.evaluate_tick(context)


def test_schedule_refines_exactly_what_is_stale_or_missing_and_not_running_or_failed(tmp_path,
                                                                                  instance):
    data = tmp_path / "data"
    write_sample_crawl(data, n_shards=6, docs_per_shard=5)
    (data / "raw" / "sample-crawl.00006.jsonl").write_bytes(b"")  # fails has_documents
    defs = definitions.build_definitions(data_dir=data, shards_per_run=2)
    other = definitions.build_definitions(
        data_dir=data, shards_per_run=2,
        refiner=RefinerResource(classifier=ClassifierSettings(options={"min_words": 80})))
    shards = definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shard(defs, instance, shards[0]).success
    assert definitions.materialize_shard(other, instance, shards[1]).success
    assert not definitions.materialize_shard(defs, instance, shards[6]).success
    # a run being launched already covers shards 4 and 5
    job = defs.resolve_job_def("refine_shard_job")
    instance.create_run_for_job(job, run_config=definitions.run_config(),
                                status=dg.DagsterRunStatus.STARTING,
                                tags={RANGE_START: shards[4], RANGE_END: shards[5]})

    schedule = defs.resolve_schedule_def("refine_schedule")
    requests = evaluate(schedule, instance, defs).run_requests
    # 0 is current, 1 stale (another refiner), 2 and 3 missing, 4-5 in flight, 6 failed a check;
    # a run starts at a shard's first stage that is not current: raw_shard is current for 1
    assert [(r.tags[RANGE_START], r.tags[RANGE_END], r.asset_selection) for r in requests] == [
        (shards[2], shards[3], [dg.AssetKey(stage) for stage in STAGES]),
        (shards[1], shards[1], [dg.AssetKey(stage) for stage in STAGES[1:]])]
    for request in requests:
        result = job.execute_in_process(instance=instance, tags=request.tags,
                                        asset_selection=request.asset_selection,
                                        run_config=definitions.run_config())
        assert result.success
        materialized = {e.asset_key for e in result.get_asset_materialization_events()}
        assert materialized == set(request.asset_selection)
        # the selected stages' checks run with them
        assert {e.asset_key for e in result.get_asset_check_evaluations()} == materialized
    assert evaluate(schedule, instance, defs).skip_message
    # the failed shard waits for a change of its inputs: a fixed crawl file
    (data / "raw" / "sample-crawl.00006.jsonl").write_text('{"text": "%s"}\n' % (
        "A sentence of plain and useful words for the corpus. " * 20))
    [retry] = evaluate(schedule, instance, defs).run_requests
    assert (retry.tags[RANGE_START], retry.tags[RANGE_END]) == (shards[6], shards[6])


def test_sensor_observes_changed_crawl_files_in_bounded_ticks_from_the_listing(tmp_path,
                                                                             instance):
    raw = raw_folder(tmp_path, [f"s.{i:05d}.jsonl" for i in range(5)])
    source = RawSource(path=str(raw), max_observations_per_tick=2)
    sensor = build_raw_shard_sensor(shards_per_run=16)
    observed, cursor = [], None
    for _ in range(3):
        result = tick(sensor, instance, source, cursor)
        observed.append([e.partition for e in result.asset_events])
        cursor = result.cursor
    assert observed == [["s.00000", "s.00001"], ["s.00002", "s.00003"], ["s.00004"]]
    assert isinstance(tick(sensor, instance, source, cursor), dg.SkipReason)
    # a rewritten file is observed again, its version (size, modification time) as the data
    # version: nothing is hashed in a tick
    path = drop(raw, "s.00002.jsonl", 9_000_000_000)
    path.write_text('{"text": "a longer page of the new crawl"}\n')
    [event] = tick(sensor, instance, source, cursor).asset_events
    stat = path.stat()
    assert event.partition == "s.00002"
    assert event.tags["dagster/data_version"] == f"v:{stat.st_size}:{stat.st_mtime_ns}"
