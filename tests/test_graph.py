"""The Dagster graph end to end in a temporary instance: real assets, Parquet, checks, sensor."""

import json
import re

import dagster as dg
import polars as pl
import pytest

from prox_dagster import definitions
from prox_dagster.pipeline import refine_chunks
from prox_dagster.refiners import build_refiner
from prox_dagster.sample import sample_documents, write_sample_crawl
from prox_dagster.resources import CheckThresholds, ClassifierSettings, RefinerResource
from manifests import read_manifest

pytestmark = pytest.mark.integration
SHARDS = ["sample-crawl.00000", "sample-crawl.00001"]


@pytest.fixture
def crawl(tmp_path):
    write_sample_crawl(tmp_path / "data", n_shards=2, docs_per_shard=12)
    return tmp_path / "data"


def test_sensor_registers_new_shards_once(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    assert definitions.register_new_shards(defs, instance) == SHARDS
    assert sorted(instance.get_dynamic_partitions("shards")) == SHARDS
    assert definitions.register_new_shards(defs, instance) == []
    (crawl / "raw" / "fresh.00009.jsonl").write_text('{"text": "new crawl"}\n')
    assert definitions.register_new_shards(defs, instance) == ["fresh.00009"]


def test_two_partitions_through_the_whole_graph(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    version = RefinerResource().version
    for shard in SHARDS:
        result = definitions.materialize_shard(defs, instance, shard)
        assert result.success
        checks = {(c.asset_key.to_user_string(), c.check_name): c.passed
                  for c in result.get_asset_check_evaluations()}
        assert len(checks) == 14 and all(checks.values()), checks  # 8 blocking, 6 current

        raw = pl.read_parquet(crawl / "raw_shard" / f"{shard}.parquet")
        clean = pl.read_parquet(crawl / "clean_shard" / f"{shard}.parquet")
        docs = pl.read_parquet(crawl / "doc_refined_shard" / f"{shard}.parquet")
        chunks = pl.read_parquet(crawl / "chunk_refined_shard" / f"{shard}.parquet")
        tokens = pl.read_parquet(crawl / "tokenized_shard" / f"{shard}.parquet")
        assert sorted(clean["id"]) == sorted(raw["id"]) and raw.height == 12
        assert set(clean["status"]) <= {"kept", "dropped_doc", "dropped_chunk", "fallback_raw"}
        assert set(clean["refiner_version"]) == {version}
        dropped = set(docs.filter(~pl.col("doc_keep"))["id"])
        assert set(clean.filter(pl.col("status") == "dropped_doc")["id"]) == dropped
        assert set(chunks["doc_id"]) == set(docs.filter(pl.col("doc_keep"))["id"])
        kept = clean.filter(pl.col("status") == "kept")
        assert set(tokens["id"]) == set(kept["id"])
        assert (kept["tokens_out"] < kept["tokens_in"]).all()  # boilerplate came out
        assert not kept["text"].str.contains("All rights reserved").any()

        meta = definitions.latest_metadata(instance, "clean_shard", shard)
        assert meta["rows_in"] == 12 and meta["dagster/row_count"] == 12
        assert meta["tokens_in"] == clean["tokens_in"].sum()
        assert meta["refiner_version"] == version
        doc_meta = definitions.latest_metadata(instance, "doc_refined_shard", shard)
        assert doc_meta["parse_rate"] == 1.0 and doc_meta["refiner_version"] == version
        assert doc_meta["duration_s"] >= 0 and doc_meta["rows_per_s"] > 0
        chunk_meta = definitions.latest_metadata(instance, "chunk_refined_shard", shard)
        refiner = build_refiner("classifier")  # the same model, shown the same shard
        refine_chunks(pl.read_parquet(crawl / "chunked_shard" / f"{shard}.parquet"), refiner)
        assert 0 < chunk_meta["estimated_content_share"] < 1
        assert chunk_meta["estimated_content_share"] == round(refiner.prior, 4)
        sentence, short = refiner.chunk_thresholds
        assert chunk_meta["chunk_sentence_threshold"] == round(sentence, 4)
        assert chunk_meta["chunk_short_line_threshold"] == round(short, 4)
        assert chunk_meta["preset"] == "balanced" and chunk_meta["keep_kinds"] == "main, list"
        # the lines the shard's programs removed, by the kind each removal names
        programs = pl.read_parquet(crawl / "chunk_refined_shard" / f"{shard}.parquet")
        named = {}
        for program in programs["chunk_program"]:
            for start, end, kind in re.findall(
                    r"remove_lines\(line_start=(\d+), line_end=(\d+)\)  # (\w+)", program):
                named[kind] = named.get(kind, 0) + int(end) - int(start) + 1
        # shown in the UI as a table of kind and count
        table = chunk_meta["removed_lines_by_kind"]
        assert [c.name for c in table.schema.columns] == ["removed_lines_by_kind", "count"]
        assert named and {r.data["removed_lines_by_kind"]: r.data["count"]
                          for r in table.records} == named
        assert set(named) <= set(refiner.model.kinds) - {"main", "list"}

    raw_meta = definitions.latest_metadata(instance, "raw_shard", SHARDS[0])
    assert raw_meta["quarantined"] == 2
    quarantine = pl.read_parquet(crawl / "raw_quarantine" / f"{SHARDS[0]}.parquet")
    assert sorted(quarantine["reason"].str.slice(0, 7)) == ["invalid", "missing"]
    # a shard with nothing quarantined has no quarantine file (none empty per shard)
    clean_raw = [s for s in SHARDS
                 if definitions.latest_metadata(instance, "raw_shard", s)["quarantined"] == 0]
    assert clean_raw and not any((crawl / "raw_quarantine" / f"{s}.parquet").exists()
                                 for s in clean_raw)
    # the classifier calls no model: nothing to resume from, no checkpoint files
    assert not (crawl / ".checkpoints").exists()

    assert definitions.materialize_pretraining_set(defs, instance).success
    manifest = read_manifest(crawl)
    assert [s["shard"] for s in manifest["shards"]] == SHARDS
    assert manifest["total_tokens"] == sum(
        pl.read_parquet(crawl / "tokenized_shard" / f"{s}.parquet")["n_tokens"].sum()
        for s in SHARDS)
    assert all(s["refiner_versions"] == [version] for s in manifest["shards"])


def test_assets_and_pools_as_operators_see_them(crawl):
    defs = definitions.build_definitions(data_dir=crawl)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"raw_crawl_file", "raw_shard", "doc_refined_shard", "chunked_shard",
                    "chunk_refined_shard",
                    "clean_shard", "tokenized_shard", "pretraining_set", "lineage_audit",
                    "refiner_evaluation", "classifier_model", "ablation"}
    version = RefinerResource().version
    for name in ("doc_refined_shard", "chunk_refined_shard"):
        node = graph.get(dg.AssetKey(name))
        assert node.code_version.startswith(f"{version}|{name}.")
        assert node.assets_def.op.pool is None  # a CPU refiner claims no GPU
    # the training ablation is the refiner's result: another refiner shows it stale
    assert graph.get(dg.AssetKey("ablation")).code_version.startswith(f"{version}|ablation@")
    # a GPU refiner's steps share the `gpu` pool; its hub model is not asked for a commit
    # while the code location loads (HF_HUB_OFFLINE, nothing cached: unresolved until a step)
    gpu = definitions.build_definitions(data_dir=crawl, refiner=RefinerResource(
        backend="vllm", doc_model="gair-prox/web-doc-refining-lm"))
    node = gpu.resolve_asset_graph().get(dg.AssetKey("doc_refined_shard"))
    assert node.assets_def.op.pool == "gpu"
    assert node.code_version.startswith("vllm:gair-prox/web-doc-refining-lm@")
    for name in ("raw_shard", "chunked_shard", "clean_shard", "tokenized_shard"):
        node = graph.get(dg.AssetKey(name))
        assert node.code_version.startswith(f"{name}.") and node.owners
    assert graph.get(dg.AssetKey("tokenized_shard")).kinds == {"polars", "parquet"}
    assert isinstance(graph.get(dg.AssetKey("raw_shard")).partitions_def,
                      dg.DynamicPartitionsDefinition)


def test_a_failing_blocking_check_stops_the_shard_before_tokenizing(crawl, instance):
    strict = CheckThresholds(min_token_retention=0.99)
    defs = definitions.build_definitions(data_dir=crawl, checks=strict)
    definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shard(defs, instance, SHARDS[1])
    assert not result.success
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    assert failed == ["token_retention"]
    # written, audited, not published: kept under failed/ with its check results
    assert not (crawl / "clean_shard" / f"{SHARDS[1]}.parquet").exists()
    assert (crawl / "clean_shard" / "failed" / f"{SHARDS[1]}.parquet").exists()
    sidecar = json.loads((crawl / "clean_shard" / "failed" /
                          f"{SHARDS[1]}.provenance.json").read_text())
    assert sidecar["checks"]["token_retention"]["passed"] is False
    assert not (crawl / "tokenized_shard" / f"{SHARDS[1]}.parquet").exists()


def test_bad_input_shard_still_materializes_and_loses_nothing(tmp_path, instance):
    raw = tmp_path / "raw"
    raw.mkdir()
    article = next(d for d in sample_documents(20, seed=5) if not d.junk)
    good = " ".join(line for line, label in zip(article.text.split("\n"), article.line_labels)
                    if label == "M" and len(line) > 100).replace('"', "'")
    menu = ["Home", "Blog", "About", "Contact"]
    lines = [
        json.dumps({"id": "d1", "text": "\n".join([*menu, good])}),
        "{not json",
        json.dumps({"id": "d2", "url": "https://x.example/"}),
        json.dumps({"id": "d3", "text": "tiny"}),
        json.dumps({"id": "d4", "text": ("A long page of real words. " * 200_000)}),
    ]
    (raw / "messy.00001.jsonl").write_bytes(
        ("\n".join(lines) + "\n").encode() + b'{"id": "d5", "text": "caf\xe9 ' +
        good.encode() + b'"}\n')
    (raw / "empty.00002.jsonl").write_bytes(b"")
    # the 5 MB page is repetitive and dropped, so the shard retains few tokens: not this test's
    # concern (the retention check is tested above)
    defs = definitions.build_definitions(data_dir=tmp_path,
                                         checks=CheckThresholds(min_token_retention=0.0))
    definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shard(defs, instance, "messy.00001")
    assert result.success
    clean = pl.read_parquet(tmp_path / "clean_shard" / "messy.00001.parquet")
    status = dict(clean.select("id", "status").iter_rows())
    assert status == {"d1": "kept", "d3": "dropped_doc", "d4": "dropped_doc", "d5": "kept"}
    assert clean.filter(pl.col("id") == "d1")["text"][0].split("\n") == [good]  # menu removed
    meta = definitions.latest_metadata(instance, "raw_shard", "messy.00001")
    assert meta["quarantined"] == 2 and meta["utf8_repaired"] == 1
    # a file with no readable document fails a check naming it, and goes no further
    empty = definitions.materialize_shard(defs, instance, "empty.00002")
    assert not empty.success
    [check] = [c for c in empty.get_asset_check_evaluations() if not c.passed]
    assert check.check_name == "has_documents" and "empty.00002.jsonl" in check.description
    assert not (tmp_path / "doc_refined_shard" / "empty.00002.parquet").exists()


def test_changing_the_refiner_marks_refined_shards_stale(crawl, instance):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shard(defs, instance, SHARDS[0]).success

    def status(d, asset, shard):
        resolver = CachingStaleStatusResolver(instance, d.resolve_asset_graph(),
                                              LoadingContextForTest(instance))
        return resolver.get_status(dg.AssetKey(asset), shard)

    assert status(defs, "doc_refined_shard", SHARDS[0]) == StaleStatus.FRESH
    other = definitions.build_definitions(
        data_dir=crawl,
        refiner=RefinerResource(classifier=ClassifierSettings(options={"min_words": 80})))
    assert status(other, "doc_refined_shard", SHARDS[0]) == StaleStatus.STALE
    assert status(other, "chunk_refined_shard", SHARDS[0]) == StaleStatus.STALE
    assert status(other, "raw_shard", SHARDS[0]) == StaleStatus.FRESH
