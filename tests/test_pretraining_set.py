"""Token formats chosen per run through the graph, and the pre-training set's manifest."""

import json

import dagster as dg
import numpy as np
import pytest

from assets.common import RECOMPUTE_TAG
from prox_dagster import definitions
from prox_dagster.sample import write_sample_crawl
from prox_dagster.store import sha256
from resources import RefinerResource

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
    expected = {"parquet": [f"{shard}.parquet"],
                "megatron": [f"{shard}.bin", f"{shard}.idx"],
                "litgpt": [f"{shard}.tokens"]}
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


def test_manifest_lists_every_file_and_rehashes_only_changed_shards(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    megatron = {"output_format": "megatron"}
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[1],
                                          token_files=megatron).success
    assert definitions.materialize_pretraining_set(defs, instance).success
    meta = definitions.latest_metadata(instance, "pretraining_set")
    assert meta["files"] == 4 and meta["files_rehashed"] == 4 and meta["missing_shards"] == 1
    manifest = json.loads((crawl / "pretraining_set" / "manifest.json").read_text())
    assert manifest["missing_shards"] == [SHARDS[2]]
    assert [s["shard"] for s in manifest["shards"]] == SHARDS[:2]
    version = RefinerResource().version
    for entry in manifest["shards"]:
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

    assert definitions.materialize_pretraining_set(defs, instance).success
    assert definitions.latest_metadata(instance, "pretraining_set")["files_rehashed"] == 0

    before = {s["shard"]: s["files"] for s in manifest["shards"]}
    assert definitions.materialize_shard(defs, instance, SHARDS[1], token_files=megatron,
                                         ).success  # cached: files untouched
    assert definitions.materialize_pretraining_set(defs, instance).success
    assert definitions.latest_metadata(instance, "pretraining_set")["files_rehashed"] == 0

    job = defs.resolve_job_def("refine_shard_job")
    only_tokens = job.get_subset(asset_selection={dg.AssetKey("tokenized_shard")})
    assert only_tokens.execute_in_process(
        partition_key=SHARDS[1], instance=instance, tags={RECOMPUTE_TAG: "true"},
        run_config=definitions.run_config(token_files=megatron)).success
    assert definitions.materialize_pretraining_set(defs, instance).success
    assert definitions.latest_metadata(instance, "pretraining_set")["files_rehashed"] == 2
    after = json.loads((crawl / "pretraining_set" / "manifest.json").read_text())
    assert after["shards"][0]["files"] == before[SHARDS[0]]


def test_a_set_that_mixes_formats_or_tokenizers_is_refused_by_name(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[1]).success
    assert definitions.materialize_shard(defs, instance, SHARDS[2],
                                         token_files={"output_format": "megatron"}).success
    result = definitions.materialize_pretraining_set(defs, instance)
    assert not result.success
    text = "\n".join(str(e.event_specific_data.error) for e in result.all_events
                      if e.is_step_failure)
    assert "mix tokenizers, formats or dtypes" in text
    assert f"parquet, uint16: {SHARDS[0]}, {SHARDS[1]}" in text
    assert f"megatron, uint16: {SHARDS[2]}" in text
    assert not (crawl / "pretraining_set" / "manifest.json").exists()
    # one format again: the set is accepted
    assert definitions.materialize_shard(defs, instance, SHARDS[2]).success
    assert definitions.materialize_pretraining_set(defs, instance).success


def test_litgpt_chunks_are_packed_across_the_set_and_repacked_only_when_it_changes(crawl,
                                                                                   instance):
    from prox_dagster.tokenization import load_tokenizer

    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    litgpt = {"output_format": "litgpt", "litgpt_chunk_size": 2048}
    assert definitions.materialize_shards(defs, instance, SHARDS[0], SHARDS[-1],
                                          token_files=litgpt).success
    assert definitions.materialize_pretraining_set(defs, instance, token_files=litgpt).success
    manifest = json.loads((crawl / "pretraining_set" / "manifest.json").read_text())
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
    meta = definitions.latest_metadata(instance, "pretraining_set")
    assert meta["litgpt_chunks"] == packed["chunks"] and meta["packed_now"] is True
    assert meta["padding_tokens"] == packed["padding_tokens"]

    # nothing changed: the chunks are reused
    assert definitions.materialize_pretraining_set(defs, instance, token_files=litgpt).success
    assert definitions.latest_metadata(instance, "pretraining_set")["packed_now"] is False
    # another chunk size: packed again, and the old chunks are removed once the manifest moved
    bigger = {**litgpt, "litgpt_chunk_size": 4096}
    assert definitions.materialize_pretraining_set(defs, instance, token_files=bigger).success
    after = json.loads((crawl / "pretraining_set" / "manifest.json").read_text())["packed"]
    assert after["chunk_size"] == 4096 and after["key"] != packed["key"]
    folders = [p.name for p in (crawl / "pretraining_set").iterdir() if p.is_dir()]
    assert folders == [f"litgpt-{after['key']}"]
