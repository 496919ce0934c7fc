import gzip
import json
import os
import stat

import polars as pl
import pytest
import zstandard

from prox_dagster.parquet_batches import write_frame as write_parquet_atomic
from prox_dagster.shards import SCHEMAS, ShardError, find_raw_shards, schema_problems, shard_key
from raw_reading import read_raw_shard
from prox_dagster.parquet_batches import BatchWriter, iter_batches
from prox_dagster.store import ShardStore

RECORDS = [
    {"id": "a", "text": "first document\nsecond line", "url": "https://a.example/",
     "lang": "en"},
    {"id": 7, "text": "numeric id", "extra": {"nested": [1, 2]}},
    {"text": "no id here", "source": "cc-main"},
]


def _jsonl(records):
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_raw_format_reads_to_the_same_contract(tmp_path, suffix):
    path = tmp_path / f"crawl.00001{suffix}"
    if suffix == ".jsonl":
        path.write_bytes(_jsonl(RECORDS))
    elif suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress(_jsonl(RECORDS)))
    elif suffix == ".jsonl.zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(_jsonl(RECORDS)))
    else:
        pl.DataFrame([{**r, "id": None if "id" not in r else str(r["id"])}
                      for r in RECORDS[:1] + RECORDS[2:]]).write_parquet(path)
    shard = read_raw_shard(path)
    assert shard.shard == "crawl.00001"
    assert schema_problems(shard.documents, "raw_shard") == []
    docs = {row["id"]: row for row in shard.documents.iter_rows(named=True)}
    assert docs["a"]["url"] == "https://a.example/"
    assert json.loads(docs["a"]["meta"])["lang"] == "en"
    assert docs["a"]["text"] == "first document\nsecond line"
    generated = [i for i in docs if i.startswith("crawl.00001/")]
    assert len(generated) == 1 and docs[generated[0]]["source"] == "cc-main"
    if suffix != ".parquet":
        assert json.loads(docs["7"]["meta"]) == {"extra": {"nested": [1, 2]}}
        assert docs["a"]["source"] == path.name
    assert shard.quarantine.height == 0


def test_bad_records_are_quarantined_with_reasons_and_nothing_else_is_lost(tmp_path):
    big = "word " * 1_000_000  # a 5 MB document
    lines = [
        json.dumps({"id": "ok-1", "text": "good"}).encode(),
        b'{"id": "broken", "text": "unterminated',
        json.dumps({"id": "no-text", "url": "u"}).encode(),
        json.dumps({"id": "null-text", "text": None}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        b"",
        json.dumps({"id": "ok-1", "text": "duplicate id"}).encode(),
        '{"id": "latin1", "text": "caf\u00e9"}'.encode("latin-1"),
        json.dumps({"id": "big", "text": big}).encode(),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    shard = read_raw_shard(path)
    assert shard.documents["id"].to_list() == ["ok-1", "latin1", "big"]
    reasons = dict(zip(shard.quarantine["line_no"], shard.quarantine["reason"]))
    assert set(reasons) == {1, 2, 3, 4, 6}
    assert reasons[1].startswith("invalid JSON")
    assert reasons[2] == "missing text"
    assert reasons[3] == "text is NoneType, not a string"
    assert reasons[4] == "record is a JSON list, not an object"
    assert reasons[6] == "duplicate id: ok-1"
    assert shard.quarantine.filter(pl.col("line_no") == 1)["raw"][0].startswith('{"id": "broken"')
    latin = shard.documents.filter(pl.col("id") == "latin1").row(0, named=True)
    assert latin["text"] == "caf\ufffd" and json.loads(latin["meta"])["utf8_repaired"] is True
    assert len(shard.documents.filter(pl.col("id") == "big")["text"][0]) == len(big)
    assert shard.stats["utf8_repaired"] == 1 and shard.stats["quarantined"] == 5
    # every non-blank line is accounted for: a document or a quarantined record
    assert shard.documents.height + shard.quarantine.height == len(lines) - 1


def test_empty_shard_reads_to_empty_tables_with_the_contract(tmp_path):
    path = tmp_path / "empty.jsonl.gz"
    path.write_bytes(gzip.compress(b""))
    shard = read_raw_shard(path)
    assert shard.documents.height == 0 and shard.quarantine.height == 0
    assert dict(shard.documents.schema) == SCHEMAS["raw_shard"]


def test_truncated_gzip_keeps_what_was_read_and_quarantines_the_tail(tmp_path):
    data = gzip.compress(_jsonl([{"id": str(i), "text": "x " * 200} for i in range(200)]))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    shard = read_raw_shard(path)
    assert 0 < shard.documents.height < 200
    assert shard.quarantine["reason"][-1].startswith("damaged file: cut.jsonl.gz")


def test_unreadable_inputs_raise_errors_naming_the_shard(tmp_path):
    with pytest.raises(ShardError, match="'nope'.*does not exist"):
        read_raw_shard(tmp_path / "nope.jsonl")
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ShardError, match="shard 'x': cannot read Parquet"):
        read_raw_shard(bad)
    pl.DataFrame({"body": ["a"]}).write_parquet(tmp_path / "y.parquet")
    with pytest.raises(ShardError, match="no 'text' column"):
        read_raw_shard(tmp_path / "y.parquet")


def test_shard_keys_and_discovery(tmp_path):
    assert shard_key("a/crawl-2026-10.00042.jsonl.gz") == "crawl-2026-10.00042"
    assert shard_key("x.parquet") == "x"
    assert shard_key("notes.txt") is None and shard_key(".jsonl") is None
    for name in ("b.jsonl", "a.parquet", "readme.md", ".hidden.jsonl"):
        (tmp_path / name).write_text("")
    assert list(find_raw_shards(tmp_path)[0]) == ["a", "b"]
    (tmp_path / "a.jsonl").write_text("")
    # a key two files share is reported for those files alone; the others still flow
    files, conflicts = find_raw_shards(tmp_path)
    assert list(files) == ["b"] and conflicts == {"a": ["a.jsonl", "a.parquet"]}
    assert find_raw_shards(tmp_path / "missing") == ({}, {})


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "out" / "s.parquet"
    write_parquet_atomic(pl.DataFrame({"a": [1]}), path)
    with pytest.raises(RuntimeError, match="disk full"):
        with BatchWriter(path) as writer:
            writer.write(pl.DataFrame({"a": list(range(5000))}))  # a row group is written
            raise RuntimeError("disk full")
    assert pl.read_parquet(path)["a"].to_list() == [1]
    assert [p.name for p in path.parent.iterdir()] == ["s.parquet"]


def test_written_files_take_their_mode_from_the_umask_like_any_new_file(tmp_path):
    # a shard only its writer could read (mkstemp's 0o600) locked out the team's other users
    # and services (the webserver, a training job) on a shared volume
    old = os.umask(0o022)
    try:
        whole = write_parquet_atomic(pl.DataFrame({"a": [1]}), tmp_path / "whole.parquet")
        with BatchWriter(tmp_path / "batched.parquet") as writer:
            writer.write(pl.DataFrame({"a": [1]}))
        os.umask(0o077)
        private = write_parquet_atomic(pl.DataFrame({"a": [1]}), tmp_path / "private.parquet")
    finally:
        os.umask(old)
    assert stat.S_IMODE(whole.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "batched.parquet").stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_batch_writes_cut_row_groups_by_rows_and_bytes_whatever_the_batches(tmp_path,
                                                                            monkeypatch):
    import hashlib

    import pyarrow.parquet as pq

    from prox_dagster import parquet_batches

    monkeypatch.setattr(parquet_batches, "ROW_GROUP_ROWS", 50)
    monkeypatch.setattr(parquet_batches, "ROW_GROUP_BYTES", 2000)
    frame = pl.DataFrame({"id": [f"d{i}" for i in range(230)],
                          "text": ["x" * (i % 13 * 20) for i in range(230)],
                          "n": list(range(230))})
    whole = write_parquet_atomic(frame, tmp_path / "whole.parquet")
    with BatchWriter(tmp_path / "batched.parquet") as writer:
        for start in range(0, 230, 17):
            writer.write(frame.slice(start, 17))
        writer.write(frame.head(0))
    digest = [hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (whole, tmp_path / "batched.parquet")]
    assert digest[0] == digest[1]
    metadata = pq.ParquetFile(whole).metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sum(groups) == 230 and max(groups) <= 50 and len(groups) > 230 // 50 + 1
    back = list(iter_batches(whole, batch_rows=20))
    assert max(b.height for b in back) <= 20 and pl.concat(back).equals(frame)
    assert [b.columns for b in iter_batches(whole, ["n"])][0] == ["n"]
    with pytest.raises(ValueError, match="a batch has columns"):
        with BatchWriter(tmp_path / "bad.parquet") as writer:
            writer.write(frame)
            writer.write(frame.select("id"))
    assert not (tmp_path / "bad.parquet").exists()
    # no rows: a file with the columns, read back as one empty frame
    empty = write_parquet_atomic(frame.head(0), tmp_path / "empty.parquet")
    [only] = list(iter_batches(empty))
    assert only.height == 0 and only.schema == frame.schema


def test_store_read_of_a_missing_stage_names_shard_and_asset(tmp_path):
    store = ShardStore(tmp_path)
    with pytest.raises(ShardError, match="shard 's1': doc_refined_shard has no output"):
        store.read("doc_refined_shard", "s1")
    store.write(pl.DataFrame({"a": [1]}), "doc_refined_shard", "s1")
    assert store.read("doc_refined_shard", "s1")["a"].to_list() == [1]


def test_a_writer_that_keeps_no_empty_file_removes_the_one_an_earlier_write_left(tmp_path):
    store = ShardStore(tmp_path)
    schema = SCHEMAS["raw_quarantine"]
    row = pl.DataFrame({"line_no": [3], "byte_offset": [10], "reason": ["invalid JSON"],
                        "raw": ["{"]}, schema=schema)
    with store.writer("raw_quarantine", "s.00000", schema, keep_empty=False) as writer:
        writer.write(row)
    target = tmp_path / "raw_quarantine" / "s.00000.parquet"
    assert pl.read_parquet(target).equals(row) and writer.record["name"] == target.name
    # the shard read again with nothing to quarantine: the earlier file would describe records
    # the shard no longer has
    with store.writer("raw_quarantine", "s.00000", schema, keep_empty=False) as writer:
        writer.write(row.clear())
    assert not target.exists() and writer.record is None
    assert list((tmp_path / "raw_quarantine").iterdir()) == []  # no temp file left either
