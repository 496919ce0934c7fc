"""Every asset's files on S3: the whole graph for two shards against a real S3-compatible
server (moto's, started here on 127.0.0.1; the fake is S3 itself, an external edge)."""

import json
import struct
import tempfile
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from prox_dagster import definitions
from prox_dagster.pretraining import Manifest, load_manifest, pack_set
from prox_dagster.sample import write_sample_crawl
from prox_dagster.store import ShardStore, sha256

from conftest import BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.slow]




def test_the_whole_graph_for_two_shards_on_s3(s3, tmp_path, monkeypatch):
    # the code location's token format (a launchpad override would be fingerprinted as another
    # setting, and the audit would call the shards stale against the location's own)
    monkeypatch.setenv("PROX_TOKEN_FORMAT", "megatron")
    local = tmp_path / "crawl"
    write_sample_crawl(local, n_shards=2, docs_per_shard=8)
    for path in sorted((local / "raw").iterdir()):
        s3.put_file(str(path), f"{BUCKET}/crawl/{path.name}")
    defs = definitions.build_definitions(data_dir=f"s3://{BUCKET}/prox",
                                         raw_dir=f"s3://{BUCKET}/crawl")
    with dg.instance_for_test() as instance:
        shards = definitions.register_new_shards(defs, instance)
        assert shards == ["sample-crawl.00000", "sample-crawl.00001"]
        result = definitions.materialize_shards(defs, instance, shards[0], shards[1])
        assert result.success
        assert all(c.passed for c in result.get_asset_check_evaluations())
        assert definitions.materialize_pretraining_set(defs, instance).success
        meta = definitions.latest_metadata(instance, "clean_shard", shards[1])
        assert meta["path"] == f"s3://{BUCKET}/prox/clean_shard/{shards[1]}.parquet"

        # nothing was written locally; everything is in the bucket
        stored = set(s3.find(f"{BUCKET}/prox"))
        for asset in ("raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
                      "clean_shard"):
            for shard in shards:
                assert f"{BUCKET}/prox/{asset}/{shard}.parquet" in stored
        for shard in shards:
            assert {f"{BUCKET}/prox/tokenized_shard/{shard}.bin",
                    f"{BUCKET}/prox/tokenized_shard/{shard}.idx"} <= stored
        with s3.open(f"{BUCKET}/prox/clean_shard/{shards[0]}.parquet") as f:
            clean = pl.read_parquet(f)
        raw = pl.read_parquet(s3.open(f"{BUCKET}/prox/raw_shard/{shards[0]}.parquet"))
        assert sorted(clean["id"]) == sorted(raw["id"]) and raw.height == 8
        index = json.loads(s3.cat(f"{BUCKET}/prox/pretraining_set/manifest.json"))
        assert [p["file"].rsplit("/", 2)[-2] for p in index["parts"]] == ["parts"]
        manifest = load_manifest(ShardStore(f"s3://{BUCKET}/prox"),
                                 f"s3://{BUCKET}/prox/pretraining_set/manifest.json")
        assert [s["shard"] for s in manifest["shards"]] == shards
        for entry in manifest["shards"]:
            for f in entry["files"]:
                assert f["file"].startswith(f"s3://{BUCKET}/prox/tokenized_shard/")
                assert f["sha256"] == sha256(f["file"])

        # current shards on S3 are recognised as such (ETag-based fingerprints)
        again = definitions.materialize_shards(defs, instance, shards[0], shards[1])
        cached = [e.materialization.metadata["cached"].value
                  for e in again.get_asset_materialization_events()]
        assert len(cached) == 12 and all(cached)
        rows = definitions.lineage_report(defs, instance)
        assert [row["status"] for row in rows] == ["current", "current"]
    assert not Path("s3:").exists()  # no URL mistaken for a local folder


def test_a_shard_lease_on_s3_is_exclusive(s3):
    from prox_dagster.leases import STALE_AFTER_S
    from prox_dagster.shards import ShardError
    from prox_dagster.store import ShardStore

    store = ShardStore(f"s3://{BUCKET}/prox")
    lock = f"{BUCKET}/prox/.leases/clean_shard/x.00001.lock"
    with store.lease("clean_shard", "x.00001", "run-a"):
        assert s3.exists(lock)
        with pytest.raises(ShardError, match="being computed by run run-a"):
            with store.lease("clean_shard", "x.00001", "run-b", wait_s=0.3, poll_s=0.1):
                pass
    assert not s3.exists(lock)
    # a lock that is not one of ours (no heartbeat) is as old as its object: fresh, waited for
    s3.pipe(lock, b'{"owner": "run-gone"}')
    with pytest.raises(ShardError, match="being computed by run run-gone"):
        with store.lease("clean_shard", "x.00001", "run-b", wait_s=0.3, poll_s=0.1):
            pass
    # and once its heartbeat is past STALE_AFTER_S, taken over
    s3.pipe(lock, json.dumps({"owner": "run-gone", "heartbeat": time.time() - STALE_AFTER_S
                              - 1}).encode())
    with store.lease("clean_shard", "x.00001", "run-b", poll_s=0.1):
        assert b"run-b" in s3.cat(lock)


WRITER = """
import base64, os, sys
import polars as pl
from prox_dagster.store import ShardStore
texts = [base64.b64encode(os.urandom(768)).decode() for _ in range(int(sys.argv[2]))]
ShardStore(sys.argv[1]).write(pl.DataFrame({"id": [str(i) for i in range(len(texts))],
                                            "text": texts}), "raw_shard", "big.00000")
"""


def test_an_empty_quarantine_is_no_object_on_s3(s3):
    from prox_dagster.shards import SCHEMAS
    from prox_dagster.store import ShardStore

    store = ShardStore(f"s3://{BUCKET}/prox")
    schema = SCHEMAS["raw_quarantine"]
    with store.writer("raw_quarantine", "q.00000", schema, keep_empty=False) as writer:
        writer.write(pl.DataFrame({"line_no": [1], "byte_offset": [0], "reason": ["invalid"],
                                   "raw": ["{"]}, schema=schema))
    assert s3.exists(f"{BUCKET}/prox/raw_quarantine/q.00000.parquet")
    with store.writer("raw_quarantine", "q.00000", schema, keep_empty=False):
        pass
    s3.invalidate_cache()
    assert not s3.exists(f"{BUCKET}/prox/raw_quarantine/q.00000.parquet")


def test_an_s3_write_killed_mid_object_leaves_the_old_object_whole(s3, tmp_path):
    import boto3

    from prox_dagster.store import ShardStore

    store = ShardStore(f"s3://{BUCKET}/prox")
    store.write(pl.DataFrame({"id": ["old"], "text": ["the shard as it was"]}), "raw_shard",
                "big.00000")
    before = s3.cat(f"{BUCKET}/prox/raw_shard/big.00000.parquet")
    # ~150 MB of nearly incompressible text: uploaded in parts (s3fs does so from 100 MiB)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, f"s3://{BUCKET}/prox", "200000"],
                              cwd=Path(__file__).resolve().parent.parent)
    client = boto3.client("s3")
    deadline = time.monotonic() + 300
    while not client.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
        assert writer.poll() is None, "the writer finished before its upload was seen"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    writer.kill()
    writer.wait(timeout=30)
    # the object readers see is the old one, whole; the unfinished upload is invisible to them
    # (and a bucket lifecycle rule aborts it: docs/deployment.md)
    assert s3.cat(f"{BUCKET}/prox/raw_shard/big.00000.parquet") == before
    s3.invalidate_cache()
    assert s3.ls(f"{BUCKET}/prox/raw_shard") == [f"{BUCKET}/prox/raw_shard/big.00000.parquet"]
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_litgpt_chunks_go_to_s3_one_at_a_time_without_staging_the_set(s3, tmp_path,
                                                                      monkeypatch):
    # a packed set can be far larger than a worker's disk: each chunk is uploaded as soon as
    # it is full, and the local staging folder never holds more than the chunk being written
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    store = ShardStore(f"s3://{BUCKET}/prox")
    streams = {"a": np.arange(1000, dtype=np.uint16), "b": np.arange(1000, 1700, dtype=np.uint16)}
    manifest = Manifest(tokenizer="t", tokenizer_hash="h")
    for shard, ids in streams.items():
        location = store.location("tokenized_shard", f"{shard}.tokens")
        s3.pipe(location.removeprefix("s3://"), ids.tobytes())
        manifest.shards.append({"shard": shard, "format": "litgpt", "dtype": "uint16",
                                "files": [{"file": location, "sha256": sha256(location)}]})
    staged_after_each_shard = []
    assert pack_set(store, manifest, store.location("pretraining_set", "manifest.json"),
                    chunk_size=64, sep_token=7,
                    progress=lambda _: staged_after_each_shard.append(
                        [p.name for p in staging.rglob("*") if p.is_file()]))
    assert staged_after_each_shard == [[], []]
    assert not any(staging.iterdir())
    packed = manifest.packed
    assert packed["chunks"] == len(packed["files"]) == -(-1700 // 64)
    assert packed["padding_tokens"] == packed["chunks"] * 64 - 1700
    read = []
    for f in packed["files"]:
        assert f["file"].startswith(f"s3://{BUCKET}/prox/pretraining_set/litgpt-")
        raw = s3.cat(f["file"].removeprefix("s3://"))
        assert f["sha256"] == sha256(f["file"]) and f["bytes"] == len(raw)
        assert raw[:7] == b"LITPKDS" and struct.unpack_from("<Q", raw, 16) == (64,)
        read.append(np.frombuffer(raw, np.uint16, offset=24))
    tokens = np.concatenate(read)
    assert tokens[:1700].tolist() == list(range(1700))
    assert set(tokens[1700:].tolist()) == {7}
