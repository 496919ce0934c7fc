"""Batched runs as backfills make them: several shards per step, per-shard records, caching,
and a failing shard that costs the others nothing."""

import dagster as dg
import polars as pl
import pytest

from prox_dagster.assets.common import RECOMPUTE_TAG, REPORTED_BY
from prox_dagster import definitions
from prox_dagster.sample import write_sample_crawl
from prox_dagster.resources import CheckThresholds, ClassifierSettings, RefinerResource

pytestmark = pytest.mark.integration
SHARDS = ["sample-crawl.00000", "sample-crawl.00001", "sample-crawl.00002"]
STAGES = ["raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
          "clean_shard", "tokenized_shard"]
CHECKS_PER_SHARD = 14  # 8 blocking, and `current` on each of the 6 stages


@pytest.fixture
def crawl(tmp_path):
    write_sample_crawl(tmp_path / "data", n_shards=3, docs_per_shard=10)
    return tmp_path / "data"


def materializations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dict]:
    return {(e.asset_key.to_user_string(), e.partition):
            {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


def step_starts(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    starts: dict[str, int] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = starts.get(event.step_key, 0) + 1
    return starts


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The step failure's message with its causes (Dagster wraps the asset's exception)."""
    error = next(e for e in result.all_events
                 if e.event_type_value == "STEP_FAILURE").step_failure_data.error
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def test_backfill_policy_batches_shards_into_runs(crawl):
    defs = definitions.build_definitions(data_dir=crawl, shards_per_run=7)
    graph = defs.resolve_asset_graph()
    for stage in STAGES:
        policy = graph.get(dg.AssetKey(stage)).backfill_policy
        assert policy.max_partitions_per_run == 7, stage


def test_one_run_one_step_per_stage_each_shard_recorded_on_its_own(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1])
    assert result.success
    # one step per stage for all three shards: the refiner is built once for the batch
    assert step_starts(result) == {stage: 1 for stage in STAGES}
    records = materializations(result)
    assert set(records) == {(stage, shard) for stage in STAGES for shard in SHARDS}
    for shard in SHARDS:
        clean = records["clean_shard", shard]
        assert clean["shard"] == shard and clean["cached"] is False
        assert clean["path"].endswith(f"clean_shard/{shard}.parquet")
        assert clean["refiner_version"] == RefinerResource().version
    # every shard's rows and hashes are its own, not the batch's
    assert len({records["raw_shard", s]["sha256"] for s in SHARDS}) == 3
    checks = [(c.asset_key.to_user_string(), c.check_name, c.partition)
              for c in result.get_asset_check_evaluations()]
    assert len(checks) == len(set(checks)) == CHECKS_PER_SHARD * len(SHARDS)
    assert {partition for _, _, partition in checks} == set(SHARDS)
    assert all(c.passed for c in result.get_asset_check_evaluations())
    for stage in STAGES:
        assert instance.get_materialized_partitions(dg.AssetKey(stage)) == set(SHARDS)


def test_current_shards_are_cached_until_inputs_or_settings_change(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    computed = definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1])
    assert computed.success
    clean_file = crawl / "clean_shard" / f"{SHARDS[1]}.parquet"
    written = clean_file.stat().st_mtime_ns

    first = definitions.latest_metadata(instance, "clean_shard", SHARDS[1])
    again = definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1])
    assert again.success
    records = materializations(again)
    assert all(meta["cached"] for meta in records.values())
    assert clean_file.stat().st_mtime_ns == written
    # a cached shard's materialization is a few values and a link to the run that computed
    # it: bounded in the run storage whatever the stage reports
    for event in again.get_asset_materialization_events():
        assert len(dg.serialize_value(event.materialization)) < 2048, event.asset_key
        assert event.materialization.metadata[REPORTED_BY].value == computed.run_id
    # ... which latest_metadata follows: the computation's values, cached
    assert "status_counts" in first and first["cached"] is False
    assert definitions.latest_metadata(instance, "clean_shard", SHARDS[1]) == \
        {**first, "cached": True, REPORTED_BY: computed.run_id}
    # every check is evaluated again against the new materialization, its description kept
    evaluations = again.get_asset_check_evaluations()
    assert len(evaluations) == CHECKS_PER_SHARD * len(SHARDS)
    assert all(len(dg.serialize_value(e)) < 1024 for e in evaluations)

    forced = definitions.materialize_shards(defs, instance, SHARDS[1], SHARDS[1],
                                            tags={RECOMPUTE_TAG: "true"})
    assert not any(meta["cached"] for meta in materializations(forced).values())

    # another refiner: raw and the refiner-independent stages stay cached, refined ones redo
    other = definitions.build_definitions(
        data_dir=crawl,
        refiner=RefinerResource(classifier=ClassifierSettings(options={"min_words": 80})))
    changed = materializations(definitions.materialize_shards(other, instance, SHARDS[0],
                                                              SHARDS[0]))
    assert changed["raw_shard", SHARDS[0]]["cached"] is True
    assert changed["doc_refined_shard", SHARDS[0]]["cached"] is False
    assert changed["clean_shard", SHARDS[0]]["cached"] is False

    # changed input bytes upstream: the stage recomputes even with the same settings
    raw_file = next((crawl / "raw").glob(f"{SHARDS[2]}.*"))
    assert raw_file.suffix == ".parquet"
    pl.DataFrame({"id": ["only"], "text": ["A single short replacement page."]}).write_parquet(
        raw_file)
    redone = materializations(definitions.materialize_shards(defs, instance, SHARDS[2],
                                                             SHARDS[2]))
    assert redone["raw_shard", SHARDS[2]]["cached"] is False
    assert redone["raw_shard", SHARDS[2]]["dagster/row_count"] == 1


def test_a_broken_shard_fails_alone_and_the_rest_of_its_batch_is_kept(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    good = next((crawl / "raw").glob(f"{SHARDS[1]}.*"))
    original = good.read_bytes()
    good.unlink()
    # a corrupt Parquet file cannot be read at all (a damaged .gz or .zst keeps its records
    # up to the damage and becomes a quarantine row instead)
    broken = crawl / "raw" / f"{SHARDS[1]}.parquet"
    broken.write_bytes(b"PAR1 not really parquet")

    result = definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1])
    assert not result.success
    message = failure_text(result)
    assert f"1 of 3 shards failed (the other 2 are written and recorded): {SHARDS[1]}: " \
        "ShardError" in message and "cannot read Parquet" in message
    # the two good shards are written and recorded, with their checks
    assert instance.get_materialized_partitions(dg.AssetKey("raw_shard")) == {SHARDS[0],
                                                                             SHARDS[2]}
    assert (crawl / "raw_shard" / f"{SHARDS[2]}.parquet").exists()
    assert not (crawl / "raw_shard" / f"{SHARDS[1]}.parquet").exists()
    assert {c.partition for c in result.get_asset_check_evaluations()} == {SHARDS[0], SHARDS[2]}

    broken.unlink()
    good.write_bytes(original)
    retry = definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1])
    assert retry.success
    raw = {shard: meta["cached"] for (stage, shard), meta in materializations(retry).items()
           if stage == "raw_shard"}
    assert raw == {SHARDS[0]: True, SHARDS[1]: False, SHARDS[2]: True}


def test_a_single_shard_run_reports_the_error_itself(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shard(defs, instance, SHARDS[0])
    assert result.success
    (crawl / "doc_refined_shard" / f"{SHARDS[0]}.parquet").unlink()
    job = defs.resolve_job_def("refine_shard_job")
    only_chunks = job.get_subset(asset_selection={dg.AssetKey("chunked_shard")})
    failed = only_chunks.execute_in_process(partition_key=SHARDS[0], instance=instance,
                                            raise_on_error=False)
    assert not failed.success
    text = failure_text(failed)
    assert SHARDS[0] in text and "doc_refined_shard" in text and "does not exist" in text


@pytest.mark.slow
def test_many_tiny_shards_in_batched_runs_with_one_broken(tmp_path, instance):
    """40 shards in runs of 8, as a backfill with BackfillPolicy.multi_run(8) launches them:
    one corrupt shard fails its run's later stages only; a retry recomputes only it."""
    raw = tmp_path / "raw"
    raw.mkdir()
    page = ('{"text": "Lists in Python keep items in order and grow as needed. You can append, '
            'insert and remove items, and slice them to copy parts of a list."}\n')
    for i in range(40):
        (raw / f"tiny.{i:05d}.jsonl").write_text(page)
    (raw / "tiny.00013.jsonl").write_bytes(page.encode() + b"\x00" * 10)  # a record, not JSON
    (raw / "tiny.00021.jsonl").unlink()
    (raw / "tiny.00021.parquet").write_bytes(b"PAR1 garbage")  # corrupt: cannot be read
    # one short page per shard: the refiner drops most of them, which is not this test's concern
    defs = definitions.build_definitions(
        data_dir=tmp_path, shards_per_run=8,
        checks=CheckThresholds(min_token_retention=0.0, min_kept_share=0.0))
    keys = definitions.register_new_shards(defs, instance)
    assert len(keys) == 40
    batches = [keys[i:i + 8] for i in range(0, 40, 8)]  # partitions in registration order
    broken = next(i for i, batch in enumerate(batches) if "tiny.00021" in batch)
    results = [definitions.materialize_shards(defs, instance, batch[0], batch[-1])
               for batch in batches]
    assert [r.success for r in results] == [i != broken for i in range(5)]
    assert step_starts(results[broken - 1]) == {stage: 1 for stage in STAGES}
    done = instance.get_materialized_partitions(dg.AssetKey("tokenized_shard"))
    assert done == set(keys) - set(batches[broken])  # only the broken shard's batch stopped
    assert instance.get_materialized_partitions(dg.AssetKey("raw_shard")) == \
        set(keys) - {"tiny.00021"}
    assert "tiny.00021" in failure_text(results[broken])

    (raw / "tiny.00021.parquet").unlink()
    (raw / "tiny.00021.jsonl").write_text('{"text": "fixed"}\n')
    retry = definitions.materialize_shards(defs, instance, batches[broken][0],
                                           batches[broken][-1])
    assert retry.success
    fresh = {shard for (stage, shard), meta in materializations(retry).items()
             if stage == "raw_shard" and not meta["cached"]}
    assert fresh == {"tiny.00021"}
    assert instance.get_materialized_partitions(dg.AssetKey("tokenized_shard")) == set(keys)
