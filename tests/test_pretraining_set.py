"""Token formats chosen per run through the graph, and the pre-training set's manifest."""

import json
from pathlib import Path
import os

import dagster as dg
import numpy as np
import pytest

from prox_dagster import pretraining
from prox_dagster.assets import pretraining as pretraining_assets
from prox_dagster.assets.common import RECOMPUTE_TAG
from prox_dagster import definitions
from prox_dagster.sample import write_sample_crawl
from prox_dagster.store import sha256
from prox_dagster.resources import CheckThresholds, RefinerResource
from manifests import read_manifest

pytestmark = pytest.mark.integration
SHARDS = ["sample-crawl.00000", "sample-crawl.00001", "sample-crawl.00002"]


@pytest.fixture
def crawl(tmp_path):
    write_sample_crawl(tmp_path / "data", n_shards=3, docs_per_shard=8)
    return tmp_path / "data"


def tokenized_files(crawl, shard):
    return sorted(p.name for p in (crawl / "tokenized_shard").iterdir()
                  if p.name.startswith(shard) and not p.name.endswith(".provenance.json"))


def test_the_format_is_chosen_per_run_and_replaces_the_previous_files(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    shard = SHARDS[0]
    expected = {"parquet": [f"{shard}.documents.pq", f"{shard}.parquet"],
                "megatron": [f"{shard}.bin", f"{shard}.documents.pq", f"{shard}.idx"],
                "litgpt": [f"{shard}.documents.pq", f"{shard}.tokens"]}
    for fmt, files in expected.items():
        settings = {"output_format": fmt, "litgpt_chunk_size": 2048}
        result = definitions.materialize_shard(defs, instance, shard, token_files=settings)
        assert result.success, fmt
        meta = definitions.latest_metadata(instance, "tokenized_shard", shard)
        assert meta["format"] == fmt and meta["dtype"] == "uint16" and meta["cached"] is False
        assert tokenized_files(crawl, shard) == files  # the other formats' files are gone
        assert meta["documents"] > 0 and meta["tokens"] > meta["documents"]
    # the same format again is cached; the run config is part of what makes it current
    definitions.materialize_shard(defs, instance, shard,
                                  token_files={"output_format": "litgpt",
                                               "litgpt_chunk_size": 2048})
    assert definitions.latest_metadata(instance, "tokenized_shard", shard)["cached"] is True

    bad = definitions.materialize_shard(defs, instance, shard,
                                        token_files={"output_format": "megatron",
                                                     "token_dtype": "uint8"})
    assert not bad.success
    assert tokenized_files(crawl, shard) == expected["litgpt"]  # nothing half-written


def test_manifest_lists_every_file_and_rehashes_only_changed_shards(crawl, instance,
                                                                   monkeypatch):
    # the UI's shard table shows a bounded sample (here 1 of the 2 listed shards)
    monkeypatch.setattr(pretraining_assets, "SHARDS_SHOWN", 1)
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    megatron = {"output_format": "megatron"}
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[1],
                                          token_files=megatron).success
    # the run's token format is what is current: the pretraining set is built with it too
    assert definitions.materialize_pretraining_set(defs, instance, token_files=megatron).success
    meta = definitions.latest_metadata(instance, "pretraining_set")
    # the writers recorded every file's sha256 and version: nothing is read to list them
    assert meta["files"] == 4 and meta["files_rehashed"] == 0
    assert meta["shards_excluded"] == 1 and meta["excluded_missing"] == 1
    assert [r.data["shard"] for r in meta["shard_table"].records] == SHARDS[:1]
    assert meta["shards_shown"].startswith("1 of 2 ")
    manifest = read_manifest(crawl)
    assert manifest["excluded"] == [{"shard": SHARDS[2], "status": "missing",
                                     "reason": "raw_shard: never written"}]
    assert [s["shard"] for s in manifest["shards"]] == SHARDS[:2]
    version = RefinerResource().version
    for entry in manifest["shards"]:
        assert entry["status"] == "current"
        assert entry["format"] == "megatron" and entry["dtype"] == "uint16"
        assert entry["refiner_versions"] == [version]
        assert entry["tokenizer_hash"] == manifest["tokenizer_hash"]
        for f in entry["files"]:
            assert f["sha256"] == sha256(f["file"])
    tokens = definitions.latest_metadata(instance, "tokenized_shard", SHARDS[0])["tokens"]
    assert manifest["shards"][0]["tokens"] == tokens
    assert manifest["total_tokens"] == sum(s["tokens"] for s in manifest["shards"])
    assert sum(manifest["histogram"]) == manifest["total_documents"]
    assert "| tokens | documents |" in meta["document_lengths"]

    before = {s["shard"]: s["files"] for s in manifest["shards"]}
    job = defs.resolve_job_def("refine_shard_job")
    only_tokens = job.get_subset(asset_selection={dg.AssetKey("tokenized_shard")})
    assert only_tokens.execute_in_process(
        partition_key=SHARDS[1], instance=instance, tags={RECOMPUTE_TAG: "true"},
        run_config=definitions.run_config(token_files=megatron)).success
    # a file touched behind the writer's back (same bytes, new modification time) is hashed
    touched = crawl / "tokenized_shard" / f"{SHARDS[0]}.bin"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert definitions.materialize_pretraining_set(defs, instance, token_files=megatron).success
    assert definitions.latest_metadata(instance, "pretraining_set")["files_rehashed"] == 1
    after = read_manifest(crawl)
    assert [f["sha256"] for f in after["shards"][0]["files"]] == \
        [f["sha256"] for f in before[SHARDS[0]]]
    for f in after["shards"][1]["files"]:
        assert f["sha256"] == sha256(f["file"])


def test_a_rebuild_after_one_shard_changed_builds_its_part_alone(crawl, instance, monkeypatch):
    """The manifest is an index and parts (here one shard each); a part whose shards' sidecars
    and statuses did not change is taken as it is, and a part no index names is removed."""
    monkeypatch.setattr(pretraining, "PART_SHARDS", 1)
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1]).success
    assert definitions.materialize_pretraining_set(defs, instance,
                                                   count_duplicates=False).success
    meta = definitions.latest_metadata(instance, "pretraining_set")
    assert (meta["parts"], meta["parts_reused"], meta["parts_written"]) == (3, 0, 3)
    index = json.loads((crawl / "pretraining_set" / "manifest.json").read_text())
    assert "shards" not in index and index["shards_listed"] == 3
    assert [(p["first"], p["listed"]) for p in index["parts"]] == [(s, 1) for s in SHARDS]
    assert index["total_tokens"] == sum(p["tokens"] for p in index["parts"])
    assert index["duplicates"] == {"counted": False, "dropped": False}
    before = read_manifest(crawl)

    # one shard computed again: its part alone is built and written; the others are reused
    assert definitions.materialize_shards(defs, instance, SHARDS[1], SHARDS[1],
                                          tags={RECOMPUTE_TAG: "true"}).success
    assert definitions.materialize_pretraining_set(defs, instance,
                                                   count_duplicates=False).success
    meta = definitions.latest_metadata(instance, "pretraining_set")
    assert (meta["parts"], meta["parts_reused"], meta["parts_written"]) == (3, 2, 1)
    after = read_manifest(crawl)
    assert after["shards"][0] == before["shards"][0] and after["shards"][2] == before["shards"][2]
    assert after["shards"][1]["files"] != before["shards"][1]["files"]  # new versions
    assert sorted(p.name for p in (crawl / "pretraining_set" / "parts").iterdir()) == \
        sorted(p["file"].rsplit("/", 1)[-1] for p in after["parts"])

    # a part changed behind the manifest's back is not reused, and a reader refuses it
    part = Path(after["parts"][0]["file"])
    part.write_text(part.read_text().replace(SHARDS[0], SHARDS[0] + "x", 1))
    with pytest.raises(ValueError, match="missing, changed or unreadable"):
        read_manifest(crawl)
    assert definitions.materialize_pretraining_set(defs, instance,
                                                   count_duplicates=False).success
    meta = definitions.latest_metadata(instance, "pretraining_set")
    assert (meta["parts_reused"], meta["parts_written"]) == (2, 1)
    assert read_manifest(crawl)["shards"] == after["shards"]


def test_a_set_that_mixes_formats_or_tokenizers_is_refused_by_name(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[1]).success
    assert definitions.materialize_shard(defs, instance, SHARDS[2],
                                         token_files={"output_format": "megatron"}).success
    # tokenized in another format than the loaded one: stale, so left out, saying why
    assert definitions.materialize_pretraining_set(defs, instance).success
    manifest = read_manifest(crawl)
    assert [s["shard"] for s in manifest["shards"]] == SHARDS[:2]
    [left_out] = manifest["excluded"]
    assert left_out["shard"] == SHARDS[2] and left_out["status"] == "stale"
    assert left_out["reason"] == "tokenized_shard: token_files.format megatron → parquet"
    # served anyway from its last good files, the set would mix formats: refused, by name
    (crawl / "pretraining_set" / "manifest.json").unlink()
    result = definitions.materialize_pretraining_set(defs, instance, keep_last_good=True)
    assert not result.success
    text = "\n".join(str(e.event_specific_data.error) for e in result.all_events
                      if e.is_step_failure)
    assert "mix tokenizers, formats or dtypes" in text
    assert f"parquet, uint16: {SHARDS[0]}, {SHARDS[1]}" in text
    assert f"megatron, uint16: {SHARDS[2]}" in text
    assert not (crawl / "pretraining_set" / "manifest.json").exists()
    # one format again: the set is accepted
    assert definitions.materialize_shard(defs, instance, SHARDS[2]).success
    assert definitions.materialize_pretraining_set(defs, instance, keep_last_good=True).success


def test_only_current_passed_shards_are_published_and_the_rest_named(crawl, instance):
    """A shard that fails a check after an earlier good version is left out, not served from
    its old files, unless the run config keeps the last good version, which the manifest
    marks; the manifest's check tells a stale listing from a current one."""
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1]).success
    first = definitions.materialize_pretraining_set(defs, instance)
    assert first.success
    [check] = first.get_asset_check_evaluations()
    assert check.check_name == "included_shards_current" and check.passed

    # shard 1 again, its clean output failing a stricter check: the old files stay
    # published for inspection's sake, but the shard is not current
    strict = definitions.build_definitions(data_dir=crawl,
                                           checks=CheckThresholds(min_kept_share=0.99))
    assert not definitions.materialize_shard(strict, instance, SHARDS[1]).success
    assert (crawl / "clean_shard" / "failed" / f"{SHARDS[1]}.parquet").exists()
    result = definitions.materialize_pretraining_set(strict, instance)
    assert result.success
    manifest = read_manifest(crawl)
    assert [s["shard"] for s in manifest["shards"]] == [SHARDS[0], SHARDS[2]] or \
        SHARDS[1] not in [s["shard"] for s in manifest["shards"]]
    [left_out] = [e for e in manifest["excluded"] if e["shard"] == SHARDS[1]]
    assert left_out == {"shard": SHARDS[1], "status": "failed",
                        "reason": "clean_shard:kept_share failed"}
    [check] = result.get_asset_check_evaluations()
    assert check.passed

    # kept on purpose: listed, marked, and the check says so as a warning
    kept = definitions.materialize_pretraining_set(strict, instance, keep_last_good=True)
    manifest = read_manifest(crawl)
    [entry] = [s for s in manifest["shards"] if s["shard"] == SHARDS[1]]
    assert entry["status"] == "last_good"
    assert entry["why"] == "failed: clean_shard:kept_share failed"
    [check] = kept.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert SHARDS[1] in check.description and "last_good" in check.description

    # the manifest a training job holds, checked later: shard 0 went stale since
    assert definitions.materialize_pretraining_set(defs, instance).success
    changed = definitions.build_definitions(data_dir=crawl,
                                            refiner=RefinerResource(max_chunk_tokens=300))
    job = changed.resolve_job_def("pretraining_set_job")
    only_check = job.get_subset(asset_check_selection={
        dg.AssetCheckKey(dg.AssetKey("pretraining_set"), "included_shards_current")},
        asset_selection=set())
    checked = only_check.execute_in_process(instance=instance,
                                            run_config=definitions.run_config(),
                                            raise_on_error=False)
    [check] = checked.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert f"{SHARDS[0]} is stale: chunked_shard: max_chunk_tokens 1500 → 300" in \
        check.description


def test_litgpt_chunks_are_packed_across_the_set_and_repacked_only_when_it_changes(crawl,
                                                                                   instance):
    from prox_dagster.tokenization import load_tokenizer

    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    litgpt = {"output_format": "litgpt", "litgpt_chunk_size": 2048}
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1],
                                          token_files=litgpt).success
    assert definitions.materialize_pretraining_set(defs, instance, token_files=litgpt).success
    manifest = read_manifest(crawl)
    packed = manifest["packed"]
    streams = [np.fromfile(crawl / "tokenized_shard" / f"{s}.tokens", np.uint16)
               for s in SHARDS]
    total = sum(map(len, streams))
    assert packed["tokens"] == total == manifest["total_tokens"]
    # one padded chunk at the end of the set, not one per shard
    assert packed["chunks"] == -(-total // 2048) and len(packed["files"]) == packed["chunks"]
    assert packed["padding_tokens"] == packed["chunks"] * 2048 - total < 2048
    data = np.concatenate([np.frombuffer(open(f["file"], "rb").read()[24:], np.uint16)
                           for f in packed["files"]])
    assert (data[:total] == np.concatenate(streams)).all()
    assert (data[total:] == load_tokenizer("sample").bos_token_id).all()
    assert all(f["sha256"] == sha256(f["file"]) for f in packed["files"])
    # the same chunks as a litdata set, which litgpt pretrains from: litdata reads the stream
    litdata = packed["litdata"]
    assert [f["file"].rsplit("/", 1)[-1] for f in litdata["files"]] == \
        [f"chunk-0-{i}.bin" for i in range(packed["chunks"])] + ["index.json"]
    assert all(f["sha256"] == sha256(f["file"]) for f in litdata["files"])
    from litdata import StreamingDataset, TokensLoader

    read = StreamingDataset(packed["folder"], item_loader=TokensLoader(block_size=2048),
                            shuffle=False)
    assert len(read) == total // 2048  # whole blocks of every full chunk and the last one
    assert np.concatenate([np.asarray(read[i]) for i in range(len(read))]).tolist() == \
        np.concatenate(streams)[:len(read) * 2048].tolist()
    meta = definitions.latest_metadata(instance, "pretraining_set")
    assert meta["litgpt_chunks"] == packed["chunks"] and meta["packed_now"] is True
    assert meta["padding_tokens"] == packed["padding_tokens"]

    # nothing changed: the chunks are reused
    assert definitions.materialize_pretraining_set(defs, instance, token_files=litgpt).success
    assert definitions.latest_metadata(instance, "pretraining_set")["packed_now"] is False
    # another chunk size: packed again, and the old chunks are removed once the manifest moved
    bigger = {**litgpt, "litgpt_chunk_size": 4096}
    assert definitions.materialize_pretraining_set(defs, instance, token_files=bigger).success
    after = read_manifest(crawl)["packed"]
    assert after["chunk_size"] == 4096 and after["key"] != packed["key"]
    folders = [p.name for p in (crawl / "pretraining_set").iterdir() if p.is_dir()]
    assert sorted(folders) == [f"litgpt-{after['key']}", "parts"]


def _reference_copies(crawl, shards):
    """Later copies by an independent reading of the clean shards: a kept document whose id or
    text came before, in shard order; (shard, id) pairs, and the documents left per shard."""
    import polars as pl

    seen_ids, seen_texts, copies, left = set(), set(), [], {}
    for shard in shards:
        frame = pl.read_parquet(crawl / "clean_shard" / f"{shard}.parquet").filter(
            pl.col("status").is_in(["kept", "fallback_raw"]) & (pl.col("text") != ""))
        left[shard] = []
        for doc_id, text in frame.select("id", "text").iter_rows():
            if doc_id in seen_ids or text in seen_texts:
                copies.append((shard, doc_id))
            else:
                left[shard].append(doc_id)
            seen_ids.add(doc_id)
            seen_texts.add(text)
    return copies, left


def test_copies_across_shards_are_counted_and_left_out_on_request(tmp_path, instance):
    import polars as pl
    import pyarrow.parquet as pq

    from raw_reading import read_raw_shard
    from test_token_files import read_megatron  # a reader written from the format's spec

    crawl = tmp_path / "data"
    write_sample_crawl(crawl, n_shards=2, docs_per_shard=8)
    raw = crawl / "raw"
    first, second = (read_raw_shard(next(raw.glob(f"sample-crawl.0000{i}.*"))).documents
                     for i in range(2))
    # a third shard: the first's pages as they are, the second's under new ids
    copies = pl.concat([first, second.with_columns(("copy-" + pl.col("id")).alias("id"))])
    (raw / "sample-crawl.00002.jsonl").write_text("".join(
        json.dumps({"id": doc_id, "text": text}) + "\n"
        for doc_id, text in copies.select("id", "text").iter_rows()))
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    parquet = {"output_format": "parquet"}
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[2],
                                          token_files=parquet).success
    expected, left = _reference_copies(crawl, SHARDS)
    assert len(expected) >= 4 and all(shard == SHARDS[2] for shard, _ in expected)

    assert definitions.materialize_pretraining_set(defs, instance, token_files=parquet).success
    manifest = read_manifest(crawl)
    assert manifest["duplicates"]["later_copies"] == len(expected)
    assert manifest["duplicates"]["dropped"] is False
    assert [s["duplicates"] for s in manifest["shards"]] == [0, 0, len(expected)]
    assert definitions.latest_metadata(instance, "pretraining_set")["duplicate_documents"] == \
        len(expected)
    kept_before = manifest["shards"][2]

    for fmt in ("parquet", "megatron", "litgpt"):
        settings = {"output_format": fmt, "litgpt_chunk_size": 2048}
        assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[2],
                                              token_files=settings).success
        result = definitions.materialize_pretraining_set(defs, instance, token_files=settings,
                                                         drop_duplicates=True)
        assert result.success, fmt
        assert all(c.passed for c in result.get_asset_check_evaluations())
        manifest = read_manifest(crawl)
        entry = manifest["shards"][2]
        assert entry["duplicates_dropped"] == len(expected), fmt
        assert entry["documents"] == len(left[SHARDS[2]])
        assert all("/deduplicated-" in f["file"] for f in entry["files"])
        assert manifest["total_documents"] == sum(len(ids) for ids in left.values())
        assert sum(manifest["histogram"]) == manifest["total_documents"]
        for f in entry["files"]:
            assert f["sha256"] == sha256(f["file"])
        if fmt == "parquet":
            table = pq.read_table(entry["files"][0]["file"])
            assert table["id"].to_pylist() == left[SHARDS[2]]
            original = pq.read_table(crawl / "tokenized_shard" / f"{SHARDS[2]}.parquet")
            by_id = dict(zip(original["id"].to_pylist(), original["input_ids"].to_pylist()))
            assert table["input_ids"].to_pylist() == [by_id[i] for i in left[SHARDS[2]]]
            assert entry["tokens"] < kept_before["tokens"]
        elif fmt == "megatron":
            index = next(f["file"] for f in entry["files"] if f["file"].endswith(".idx"))
            _, docs = read_megatron(index.removesuffix(".idx"))
            _, original = read_megatron(crawl / "tokenized_shard" / SHARDS[2])
            ids = pq.read_table(crawl / "tokenized_shard" / f"{SHARDS[2]}.documents.pq")["id"]
            assert docs == [doc for doc, doc_id in zip(original, ids.to_pylist())
                            if doc_id in set(left[SHARDS[2]])]
            assert sum(map(len, docs)) == entry["tokens"]
        else:
            assert manifest["packed"]["tokens"] == manifest["total_tokens"]
    # the filtered copies of the formats no longer listed are removed
    folders = [p.name for p in (crawl / "pretraining_set").iterdir() if p.is_dir()
               and p.name.startswith("deduplicated-")]
    assert len(folders) == 1


def test_copies_found_in_hash_buckets_are_the_copies_found_at_once(tmp_path, monkeypatch):
    """Bounded memory changes nothing: with buckets of 3 documents, the same copies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prox_dagster import pretraining
    from prox_dagster.store import ShardStore
    from prox_dagster.token_files import DOCUMENTS_SCHEMA

    rng = np.random.default_rng(5)
    entries = []
    for shard in range(6):
        ids = [f"d{int(i)}" for i in rng.integers(0, 40, 12)]
        hashes = [int(h) for h in rng.integers(0, 30, 12)]
        path = tmp_path / f"s{shard}.documents.pq"
        pq.write_table(pa.table([ids, pa.array(hashes, pa.uint64()), [1] * 12],
                                schema=DOCUMENTS_SCHEMA), path)
        entries.append({"documents": 12, "documents_file": {"file": str(path)}, "ids": ids,
                        "hashes": hashes})
    seen_ids, seen_hashes, expected = set(), set(), {}
    for index, entry in enumerate(entries):
        for position, (doc_id, h) in enumerate(zip(entry["ids"], entry["hashes"])):
            if doc_id in seen_ids or h in seen_hashes:
                expected.setdefault(index, []).append(position)
            seen_ids.add(doc_id)
            seen_hashes.add(h)
    store = ShardStore(tmp_path)
    at_once = pretraining._later_copies(store, entries)
    monkeypatch.setattr(pretraining, "DEDUP_BUCKET_ROWS", 3)
    bucketed = pretraining._later_copies(store, entries)
    for later, by_text, by_id in (at_once, bucketed):
        assert {i: p.tolist() for i, p in later.items()} == expected
        assert by_text + by_id == sum(map(len, expected.values()))
    assert at_once[1:] == bucketed[1:]
