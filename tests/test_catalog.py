"""The shard catalog: an evaluation costs what changed since the last one, says what changed to
each stage's `current` check, and is never fooled by, nor crashes on, what it cannot read."""

import json

import dagster as dg
import polars as pl
import pytest

from prox_dagster.assets.audit import RANGE_END, RANGE_START, evaluate, expected_of
from prox_dagster import definitions
from prox_dagster.catalog import Catalog
from prox_dagster.leases import run_heartbeat
from prox_dagster.sample import write_sample_crawl
from prox_dagster.resources import (CheckThresholds, ProgramPolicy, RawSource, RefinerResource,
                                    ShardStorage, TokenizerResource)

pytestmark = pytest.mark.integration
SHARDS = [f"sample-crawl.{i:05d}" for i in range(3)]


@pytest.fixture
def store(tmp_path, instance):
    write_sample_crawl(tmp_path, n_shards=3, docs_per_shard=6)
    defs = definitions.build_definitions(data_dir=tmp_path)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1]).success
    return tmp_path


def judge(instance, data, read_budget=None, seconds=None, **settings):
    expected = expected_of(settings.get("refiner", RefinerResource()),
                           settings.get("policy", ProgramPolicy()), TokenizerResource(),
                           settings.get("checks", CheckThresholds()))
    return evaluate(instance, ShardStorage(base=str(data)), RawSource(path=str(data / "raw")),
                    expected, read_budget=read_budget, seconds=seconds)


def test_an_evaluation_costs_what_changed(store, instance):
    first, _ = judge(instance, store)
    assert first.stats["judged"] == 3 and first.stats["file_reads"] > 0
    assert first.rows["status"].to_list() == ["current"] * 3
    assert first.transitions == []  # the steps said `current` when they wrote the shards
    again, _ = judge(instance, store)
    assert (again.stats["judged"], again.stats["reused"], again.stats["file_reads"]) == (0, 3, 0)
    assert again.rows.equals(first.rows)

    # one shard rewritten: that one is judged again, the others kept
    defs = definitions.build_definitions(data_dir=store)
    job = defs.resolve_job_def("refine_shard_job").get_subset(
        asset_selection={dg.AssetKey("tokenized_shard")})
    assert job.execute_in_process(partition_key=SHARDS[1], instance=instance,
                                  tags={"prox/recompute": "true"},
                                  run_config=definitions.run_config()).success
    third, _ = judge(instance, store)
    assert (third.stats["judged"], third.stats["reused"]) == (1, 2)
    assert third.rows["status"].to_list() == ["current"] * 3


def test_a_setting_change_is_told_to_the_current_checks_naming_the_values(store, instance):
    judge(instance, store)
    policy = ProgramPolicy(min_words=30)
    changed, _ = judge(instance, store, policy=policy)
    assert changed.stats["judged"] == 3 and changed.stats["file_reads"] > 0
    assert changed.transitions == [(shard, "clean_shard", "stale",
                                    "policy.min_words 10 → 30") for shard in SHARDS]
    defs = definitions.build_definitions(data_dir=store, policy=policy)
    assert defs.resolve_job_def("lineage_audit_job").execute_in_process(
        instance=instance).success
    meta = definitions.latest_metadata(instance, "lineage_audit")
    assert meta["current_checks_reported"] == 3 and meta["shards_stale"] == 3
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("clean_shard"), "current"), limit=20)
    latest = {}
    for record in records:  # newest first
        evaluation = record.event.dagster_event.event_specific_data
        latest.setdefault(evaluation.partition, evaluation)
    for shard in SHARDS:
        assert latest[shard].passed is False
        assert latest[shard].description == "policy.min_words 10 → 30"
    # the same state again: nothing new to say
    assert judge(instance, store, policy=policy)[0].transitions == []
    # back to the old setting, without a run: current again, and said so
    back, _ = judge(instance, store)
    assert [t[2] for t in back.transitions] == ["current"] * 3

    # told again and again, each time on the latest materialization (Dagster keeps one runless
    # evaluation per check and partition: a second runless one failed the audit)
    for settings, passed, said in ((ProgramPolicy(), True, "current again: "),
                                   (policy, False, "policy.min_words 10 → 30")):
        defs = definitions.build_definitions(data_dir=store, policy=settings)
        assert defs.resolve_job_def("lineage_audit_job").execute_in_process(
            instance=instance).success
        assert definitions.latest_metadata(instance, "lineage_audit")[
            "current_checks_reported"] == 3
        for shard in SHARDS:
            latest = _latest_current(instance, shard)
            assert latest.passed is passed and latest.description.startswith(said)
            materialization = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("clean_shard"), asset_partitions=[shard]), limit=1)
            assert latest.target_materialization_data.storage_id == \
                materialization.records[0].storage_id


def test_a_tick_tells_at_least_one_current_check_and_leaves_the_rest(store, instance):
    from prox_dagster.assets.audit import report_current

    judge(instance, store)
    policy = ProgramPolicy(min_words=30)
    changed, _ = judge(instance, store, policy=policy)
    assert len(changed.transitions) == 3
    storage = ShardStorage(base=str(store))
    assert report_current(instance, storage, changed, seconds=0) == 1  # no time: one
    rest, _ = judge(instance, store, policy=policy)
    assert [t[0] for t in rest.transitions] == SHARDS[1:]
    assert report_current(instance, storage, rest) == 2
    assert judge(instance, store, policy=policy)[0].transitions == []


def _latest_current(instance, shard):
    """The `current` evaluation of ``clean_shard``'s partition ``shard`` that the UI shows."""
    for record in instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("clean_shard"), "current"), limit=50):
        evaluation = record.event.dagster_event.event_specific_data
        if evaluation.partition == shard:
            return evaluation
    raise AssertionError(f"no `current` evaluation of {shard}")


def test_a_read_budget_defers_shards_to_the_next_evaluation(store, instance):
    first, _ = judge(instance, store, read_budget=7)  # one shard's six sidecars, and one more
    assert first.stats["judged"] == 2 and first.deferred == [SHARDS[2]]
    assert first.rows["shard"].to_list() == SHARDS[:2]
    second, _ = judge(instance, store, read_budget=7)
    assert second.stats["reused"] == 2 and second.stats["judged"] == 1 and not second.deferred


def test_a_time_budget_defers_shards_but_judges_a_batch_each_time(store, instance, monkeypatch):
    monkeypatch.setattr("prox_dagster.catalog.BATCH_SHARDS", 1)
    for reused in range(3):  # no time at all: one batch (one shard) an evaluation
        evaluation, _ = judge(instance, store, seconds=0)
        assert (evaluation.stats["reused"], evaluation.stats["judged"]) == (reused, 1)
        assert evaluation.deferred == SHARDS[reused + 1:]
    assert judge(instance, store, seconds=0)[0].stats["reused"] == 3


def test_what_cannot_be_read_is_rebuilt_or_recomputed_with_a_warning(store, instance):
    judge(instance, store)
    (store / ".catalog" / "shards.parquet").write_bytes(b"not parquet")
    warned = []
    catalog = Catalog(definitions.build_definitions(data_dir=store).resources["storage"].store,
                      warn=warned.append)
    assert catalog.load().height == 0 and "cannot be read" in warned[0]
    # a sidecar cut short: the stage is missing, said, and computed again by the next run
    sidecar = store / "chunked_shard" / f"{SHARDS[0]}.provenance.json"
    sidecar.write_text(sidecar.read_text()[:40])
    rows, _ = judge(instance, store)
    row = rows.rows.row(0, named=True)
    assert row["status"] == "missing" and row["reason"] == "chunked_shard: never written"
    result = definitions.materialize_shard(definitions.build_definitions(data_dir=store),
                                           instance, SHARDS[0])
    assert result.success
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(f"sidecar {sidecar} is unreadable or of another format" in message
               for message in logged)
    assert json.loads(sidecar.read_text())["fingerprint"]  # written whole again
    assert judge(instance, store)[0].rows["status"].to_list() == ["current"] * 3


def test_a_shard_being_written_is_running_or_its_previous_state_never_half_written(store,
                                                                                   instance):
    judge(instance, store)
    # a writer that renamed its new file into place and has not written the sidecar yet
    clean = store / "clean_shard" / f"{SHARDS[1]}.parquet"
    frame = pl.read_parquet(clean)
    frame.head(2).write_parquet(clean)
    # its sidecar is the previous one: the audit reports the previous state
    defs = definitions.build_definitions(data_dir=store)
    assert definitions.lineage_report(defs, instance)[1]["status"] == "current"
    # checked file by file, the file is not what its sidecar says: never passed as current
    [row] = [r for r in definitions.lineage_report(defs, instance, verify=True)
             if r["shard"] == SHARDS[1]]
    assert row["status"] == "missing"
    assert row["reason"] == "clean_shard: a recorded file is gone or changed"
    # and with the run that writes it alive: running
    run = instance.create_run_for_job(defs.resolve_job_def("refine_shard_job"),
                                      run_config=definitions.run_config(),
                                      status=dg.DagsterRunStatus.STARTED,
                                      tags={RANGE_START: SHARDS[1], RANGE_END: SHARDS[1]})
    with run_heartbeat(ShardStorage(base=str(store)).store, run.run_id):
        rows = definitions.lineage_report(defs, instance)
    assert rows[1]["status"] == "running" and rows[1]["in_flight_run"] == run.run_id
