"""One notion of current/stale: what the stages cache on, what Dagster shows, what the audit
says; and checks that judge exactly the materialization they ran on."""

import gzip
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from prox_dagster import definitions, fingerprint
from prox_dagster.sample import write_sample_crawl
from prox_dagster.resources import CheckThresholds, ProgramPolicy, RefinerResource, RulesSettings

pytestmark = pytest.mark.integration
SHARDS = ["sample-crawl.00000", "sample-crawl.00001"]
STAGES = fingerprint.STAGES
OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


@pytest.fixture
def crawl(tmp_path):
    write_sample_crawl(tmp_path, n_shards=2, docs_per_shard=12)
    return tmp_path


def dagster_status(defs, instance, shard):
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(),
                                          LoadingContextForTest(instance))
    return {stage: resolver.get_status(dg.AssetKey(stage), shard) for stage in STAGES}


def audit_status(defs, instance, shard):
    [row] = [r for r in definitions.lineage_report(defs, instance) if r["shard"] == shard]
    return row


def data_versions(instance, shard):
    return {stage: instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[shard]),
        limit=1).records[0].asset_materialization.tags["dagster/data_version"]
        for stage in STAGES}


def test_a_cached_rerun_changes_no_data_version_and_leaves_everything_fresh(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shards(defs, instance, *SHARDS).success
    before = {shard: data_versions(instance, shard) for shard in SHARDS}
    again = definitions.materialize_shards(defs, instance, *SHARDS)
    assert again.success
    assert all(e.materialization.metadata["cached"].value
               for e in again.get_asset_materialization_events()
               if e.asset_key.to_user_string() in STAGES)
    for shard in SHARDS:
        assert data_versions(instance, shard) == before[shard]
        assert set(dagster_status(defs, instance, shard).values()) == {StaleStatus.FRESH}
        assert audit_status(defs, instance, shard)["status"] == "current"


@pytest.mark.parametrize("change, stale, reason", [
    ({"refiner": RefinerResource(max_chunk_tokens=200)}, ["chunked_shard"],
     "chunked_shard: max_chunk_tokens 1500 → 200"),
    ({"policy": ProgramPolicy(min_words=30)}, ["clean_shard"],
     "clean_shard: policy.min_words 10 → 30"),
])
def test_a_setting_makes_exactly_the_stages_it_shapes_stale_everywhere(crawl, instance, change,
                                                                       stale, reason):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shard(defs, instance, SHARDS[0]).success
    changed = definitions.build_definitions(data_dir=crawl, **change)
    shown = dagster_status(changed, instance, SHARDS[0])
    assert [s for s, status in shown.items() if status == StaleStatus.STALE] == stale
    row = audit_status(changed, instance, SHARDS[0])
    assert row["status"] == "stale" and row["stale_stages"] == ", ".join(stale)
    assert row["reason"] == reason  # the setting, its old and its new value
    # the next run recomputes those stages and the stages after them, and all is current again
    result = definitions.materialize_shard(changed, instance, SHARDS[0])
    assert result.success
    cached = {e.asset_key.to_user_string(): e.materialization.metadata["cached"].value
              for e in result.get_asset_materialization_events()}
    assert [s for s in STAGES if not cached[s]][0] == stale[0]
    assert audit_status(changed, instance, SHARDS[0])["status"] == "current"
    assert set(dagster_status(changed, instance, SHARDS[0]).values()) == {StaleStatus.FRESH}


def test_a_threshold_judges_the_stored_output_again_and_recomputes_nothing(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shard(defs, instance, SHARDS[0]).success
    before = data_versions(instance, SHARDS[0])
    files = {p: p.stat().st_mtime_ns for p in crawl.glob("*_shard/*.parquet")}
    # shard 0 holds 2 broken records among 14: 0.14 quarantined
    strict = definitions.build_definitions(
        data_dir=crawl, checks=CheckThresholds(max_quarantine_share=0.1))
    # what the stage computes did not change: Dagster's own view stays fresh ...
    assert set(dagster_status(strict, instance, SHARDS[0]).values()) == {StaleStatus.FRESH}
    # ... while the audit says the checks are to be judged again, and with what
    row = audit_status(strict, instance, SHARDS[0])
    assert row["status"] == "stale" and row["stale_stages"] == "raw_shard"
    assert row["reason"] == "raw_shard: checks judged with max_quarantine_share 0.5 → 0.1"
    result = definitions.materialize_shard(strict, instance, SHARDS[0])
    assert not result.success  # the stored raw shard fails the stricter check
    meta = definitions.latest_metadata(instance, "raw_shard", SHARDS[0])
    assert meta["cached"] is True and meta["rechecked"] is True and meta["published"] is False
    [failed] = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert failed.check_name == "quarantine_share" and "maximum 10%" in failed.description
    assert {p: p.stat().st_mtime_ns for p in crawl.glob("*_shard/*.parquet")
            if p.exists()} == {p: t for p, t in files.items() if "raw_shard" not in str(p)}
    assert (crawl / "raw_shard" / "failed" / f"{SHARDS[0]}.parquet").exists()
    row = audit_status(strict, instance, SHARDS[0])
    assert row["status"] == "failed" and row["reason"] == "raw_shard:quarantine_share failed"
    # back to the old threshold: judged again, published again, nothing recomputed
    again = definitions.materialize_shard(defs, instance, SHARDS[0])
    assert again.success
    assert all(e.materialization.metadata["cached"].value
               for e in again.get_asset_materialization_events())
    assert data_versions(instance, SHARDS[0]) == before
    assert audit_status(defs, instance, SHARDS[0])["status"] == "current"


def test_the_docs_tables_list_what_each_setting_makes_stale_and_judges_again():
    text = OPERATIONS.read_text()

    def table(marker: str) -> dict[str, set[str]]:
        rows = dict(re.findall(r"^\| `(\w+)`[^|]*\| ([^|]+) \|", text.split(marker)[1],
                               flags=re.M))
        by_stage = {stage: set() for stage in STAGES}
        for setting, stages in rows.items():
            for stage in re.findall(r"`(\w+)`", stages):
                by_stage[stage].add(setting)
        return by_stage

    assert table("<!-- staleness table -->") == {
        stage: set(names) for stage, names in fingerprint.SHAPED_BY.items()}
    assert table("<!-- checks table -->") == {
        stage: set(names) for stage, names in fingerprint.CHECKED_BY.items()}


def test_check_results_are_tied_to_the_materialization_they_judged(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shards(defs, instance, *SHARDS)
    assert result.success
    materialized = {(e.asset_key.to_user_string(), e.partition)
                    for e in result.get_asset_materialization_events()}
    for evaluation in result.get_asset_check_evaluations():
        key = (evaluation.asset_key.to_user_string(), evaluation.partition)
        assert key in materialized
        target = evaluation.target_materialization_data
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=evaluation.asset_key,
                                  asset_partitions=[evaluation.partition]), limit=1).records
        assert target is not None and target.storage_id == record.storage_id
        assert target.run_id == result.run_id


def test_a_file_that_is_not_what_its_name_says_fails_a_check_naming_it(tmp_path, instance):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "garbage.00001.jsonl.gz").write_bytes(b"this is not gzip at all\n" * 10)
    (raw / "fine.00002.jsonl.gz").write_bytes(gzip.compress(
        b'{"text": "one line of a page"}\n'))
    defs = definitions.build_definitions(data_dir=tmp_path)
    definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shard(defs, instance, "garbage.00001")
    assert not result.success
    failed = {c.check_name: c.description for c in result.get_asset_check_evaluations()
              if not c.passed}
    assert "has_documents" in failed and "garbage.00001.jsonl.gz" in failed["has_documents"]
    assert audit_status(defs, instance, "garbage.00001")["status"] == "failed"


def test_strict_thresholds_make_the_raw_and_clean_checks_fail(crawl, instance):
    defs = definitions.build_definitions(
        data_dir=crawl, checks=CheckThresholds(max_quarantine_share=0.1, min_kept_share=0.99))
    definitions.register_new_shards(defs, instance)
    # shard 0 holds 2 broken records among 14
    raw = definitions.materialize_shard(defs, instance, SHARDS[0])
    failed = [c.check_name for c in raw.get_asset_check_evaluations() if not c.passed]
    assert failed == ["quarantine_share"]
    lenient = definitions.build_definitions(
        data_dir=crawl, checks=CheckThresholds(min_kept_share=0.99))
    clean = definitions.materialize_shard(lenient, instance, SHARDS[1])
    failed = {c.check_name: c.description for c in clean.get_asset_check_evaluations()
              if not c.passed}
    assert list(failed) == ["kept_share"] and "minimum 99%" in failed["kept_share"]


def test_chunk_programs_for_an_earlier_doc_decision_fail_the_clean_check(crawl, instance):
    """Another doc decision newly keeps documents; the clean stage materialized without the
    chunk stages must not pass them through unrefined as kept."""
    stricter = definitions.build_definitions(
        data_dir=crawl,
        refiner=RefinerResource(backend="rules", rules=RulesSettings(options={"min_words": 400})),
        checks=CheckThresholds(min_token_retention=0.0, min_kept_share=0.0))
    definitions.register_new_shards(stricter, instance)
    assert definitions.materialize_shard(stricter, instance, SHARDS[0]).success
    before = pl.read_parquet(crawl / "doc_refined_shard" / f"{SHARDS[0]}.parquet")

    current = definitions.build_definitions(data_dir=crawl)
    partial = dg.Definitions(
        assets=list(current.assets), resources=current.resources,
        jobs=[dg.define_asset_job("partial", selection=dg.AssetSelection.assets(
            "doc_refined_shard", "clean_shard"))])
    result = partial.resolve_job_def("partial").execute_in_process(
        partition_key=SHARDS[0], instance=instance, raise_on_error=False)
    after = pl.read_parquet(crawl / "doc_refined_shard" / f"{SHARDS[0]}.parquet")
    assert after["doc_keep"].sum() > before["doc_keep"].sum()  # documents newly kept
    failed = {c.check_name: c.description for c in result.get_asset_check_evaluations()
              if not c.passed}
    assert list(failed) == ["programs_match_documents"]
    for problem in ("kept documents have no chunk programs", "chunked_shard is stale"):
        assert problem in failed["programs_match_documents"]
    assert not result.success
    assert audit_status(current, instance, SHARDS[0])["status"] == "stale"


def test_a_crawl_file_rewritten_under_its_name_shows_the_raw_shard_stale(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shard(defs, instance, SHARDS[0]).success
    assert set(dagster_status(defs, instance, SHARDS[0]).values()) == {StaleStatus.FRESH}
    # the crawler rewrites the file; the sensor's next tick observes it
    source = crawl / "raw" / f"{SHARDS[0]}.jsonl.gz"
    pages = gzip.decompress(source.read_bytes()).splitlines(keepends=True)
    source.write_bytes(gzip.compress(b"".join(pages[:-3])))
    definitions.register_new_shards(defs, instance)
    assert dagster_status(defs, instance, SHARDS[0])["raw_shard"] == StaleStatus.STALE
    row = audit_status(defs, instance, SHARDS[0])
    assert row["status"] == "stale" and row["reason"] == "raw_shard: input raw changed"
    assert definitions.materialize_shard(defs, instance, SHARDS[0]).success
    assert set(dagster_status(defs, instance, SHARDS[0]).values()) == {StaleStatus.FRESH}
    assert audit_status(defs, instance, SHARDS[0])["status"] == "current"
