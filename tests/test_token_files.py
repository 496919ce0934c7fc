"""Token files read back by readers written here from the formats' specifications (not with the
writers' code), on real web documents with the Llama-2 tokenizer."""

import hashlib
import json
import struct

import numpy as np
import polars as pl
import pytest

from conftest import shared_path
from prox_dagster.token_files import (TokenFileError, pack_litgpt, token_dtype,
                                      write_token_files)

# Dtype codes as Megatron-LM's indexed_dataset and litgpt's packed_dataset define them.
SPEC_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
               7: np.float32, 8: np.uint16}


def read_megatron(prefix) -> tuple[np.dtype, list[list[int]]]:
    """MMapIndexedDataset: .idx = magic, <Q version, <B dtype, <Q sequences, <Q documents,
    int32 sizes, int64 byte pointers, int64 document indices; .bin = the tokens."""
    raw = open(f"{prefix}.idx", "rb").read()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, = struct.unpack_from("<Q", raw, 9)
    code, = struct.unpack_from("<B", raw, 17)
    n_seq, n_doc = struct.unpack_from("<QQ", raw, 18)
    assert version == 1
    offset = 34
    sizes = np.frombuffer(raw, np.int32, n_seq, offset)
    pointers = np.frombuffer(raw, np.int64, n_seq, offset + 4 * n_seq)
    doc_idx = np.frombuffer(raw, np.int64, n_doc, offset + 12 * n_seq)
    assert offset + 12 * n_seq + 8 * n_doc == len(raw)
    dtype = np.dtype(SPEC_DTYPES[code])
    data = np.fromfile(f"{prefix}.bin", dtype=dtype)
    assert data.nbytes == int(sizes.astype(np.int64).sum()) * dtype.itemsize
    sequences = [data[p // dtype.itemsize: p // dtype.itemsize + s].tolist()
                 for p, s in zip(pointers.tolist(), sizes.tolist())]
    docs = [sum(sequences[a:b], []) for a, b in zip(doc_idx[:-1], doc_idx[1:])]
    return dtype, docs


def read_litgpt(paths) -> tuple[np.dtype, int, list[np.ndarray]]:
    """LITPKDS chunk files: magic, <Q version, <B dtype, <Q chunk size, then the tokens."""
    dtype, chunk_size, chunks = None, None, []
    for path in paths:
        raw = open(path, "rb").read()
        assert raw[:7] == b"LITPKDS"
        version, = struct.unpack_from("<Q", raw, 7)
        code, = struct.unpack_from("<B", raw, 15)
        size, = struct.unpack_from("<Q", raw, 16)
        assert version == 1 and (chunk_size in (None, size))
        dtype, chunk_size = np.dtype(SPEC_DTYPES[code]), size
        data = np.frombuffer(raw, dtype, offset=24)
        assert len(data) == size  # every chunk is exactly chunk_size tokens
        chunks.append(data)
    return dtype, chunk_size, chunks


@pytest.fixture(scope="module")
def web_docs():
    root = shared_path("data", "web")
    docs = []
    for path in sorted(root.glob("*/docs.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n")[:80]:
            if not line.strip():
                continue
            record = json.loads(line)
            docs.append((f"{path.parent.name}/{record['id']}", record["text"]))
    return docs


@pytest.fixture
def clean_shard(tmp_path, web_docs):
    """A clean shard of real pages, plus an empty kept text and a dropped page."""
    ids = [d for d, _ in web_docs] + ["empty", "dropped"]
    texts = [t for _, t in web_docs] + ["", "dropped text"]
    status = ["kept"] * len(web_docs) + ["kept", "dropped_doc"]
    path = tmp_path / "clean.parquet"
    pl.DataFrame({"id": ids, "text": texts, "status": status}).write_parquet(
        path, row_group_size=100)
    return path


def expected_ids(tokenizer, texts):
    """ProX's convention, spelled with the tokenizer's ordinary call: drop a leading BOS,
    append EOS."""
    out = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            ids = ids[1:]
        if ids:
            out.append(ids + [tokenizer.eos_token_id])
    return out


def test_megatron_files_hold_every_document_exactly(tmp_path, clean_shard, web_docs,
                                                     llama_tokenizer):
    stats = write_token_files(clean_shard, tmp_path / "out", "web.00000", llama_tokenizer,
                              "megatron", batch_size=64)
    assert sorted(p.name for p in stats.files) == ["web.00000.bin", "web.00000.documents.pq",
                                                   "web.00000.idx"]
    dtype, docs = read_megatron(tmp_path / "out" / "web.00000")
    assert dtype == np.uint16  # Llama-2's 32,000 ids
    assert docs == expected_ids(llama_tokenizer, [t for _, t in web_docs])
    # the documents file lists them in the same order: id, text hash, tokens with EOS
    listed = pl.read_parquet(tmp_path / "out" / "web.00000.documents.pq")
    assert listed["id"].to_list() == [d for d, _ in web_docs]
    assert listed["n_tokens"].to_list() == [len(doc) for doc in docs]
    assert listed["text_hash"].to_list() == [  # 64 bits of blake2b, little-endian
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
        for _, t in web_docs]
    assert listed["text_hash"].n_unique() == len({t for _, t in web_docs})
    assert stats.documents == len(web_docs) and stats.skipped_empty == 1
    assert stats.tokens == sum(map(len, docs)) and sum(stats.histogram) == len(docs)


def test_litgpt_chunks_are_packed_across_shards_and_only_the_last_is_padded(
        tmp_path, clean_shard, web_docs, llama_tokenizer):
    # two shards' token streams, as tokenized_shard writes them
    half = len(web_docs) // 2
    expected = expected_ids(llama_tokenizer, [t for _, t in web_docs])
    streams = []
    for name, docs in (("a", web_docs[:half]), ("b", web_docs[half:])):
        path = tmp_path / f"{name}.parquet"
        pl.DataFrame({"id": [d for d, _ in docs], "text": [t for _, t in docs],
                      "status": ["kept"] * len(docs)}).write_parquet(path)
        stats = write_token_files(path, tmp_path / "shards", name, llama_tokenizer, "litgpt",
                                  batch_size=64)
        assert [p.name for p in stats.files] == [f"{name}.tokens", f"{name}.documents.pq"]
        streams.append(stats.files[0])
    stream = np.concatenate([np.fromfile(p, np.uint16) for p in streams]).tolist()
    assert stream == sum(expected, [])  # the ids back to back, EOS after each document

    chunk_size = 8192
    opened = [open(p, "rb") for p in streams]
    packed = pack_litgpt(opened, tmp_path / "set", np.uint16, chunk_size=chunk_size,
                         sep_token=llama_tokenizer.bos_token_id, block_tokens=1000)
    names = [p.name for p in packed.files]
    assert names == [f"train_{i:010d}.bin" for i in range(len(names))]
    assert packed.chunks == len(names) == -(-len(stream) // chunk_size)
    assert packed.tokens == len(stream)
    assert packed.padding_tokens == packed.chunks * chunk_size - len(stream) < chunk_size
    dtype, size, chunks = read_litgpt(packed.files)
    assert dtype == np.uint16 and size == chunk_size
    read = np.concatenate(chunks).tolist()
    # documents run on across chunks and across the two shards; only the tail is padding
    assert read[:len(stream)] == stream
    assert read[len(stream):] == [llama_tokenizer.bos_token_id] * packed.padding_tokens


def test_a_damaged_token_stream_is_an_error_and_writes_no_chunk(tmp_path):
    good, bad = tmp_path / "good.tokens", tmp_path / "bad.tokens"
    np.arange(10, dtype=np.uint16).tofile(good)
    bad.write_bytes(b"\x01\x00\x02")  # a uint16 stream cut inside an id
    with pytest.raises(TokenFileError, match="ends inside an id"):
        pack_litgpt([open(good, "rb"), open(bad, "rb")], tmp_path / "set", np.uint16,
                    chunk_size=4, sep_token=1)
    assert not any((tmp_path / "set").iterdir())


def test_parquet_lists_use_the_smallest_dtype(tmp_path, clean_shard, web_docs, llama_tokenizer):
    stats = write_token_files(clean_shard, tmp_path / "out", "web.00000", llama_tokenizer,
                              "parquet", batch_size=64)
    table = pl.read_parquet(stats.files[0])
    assert table.schema["input_ids"] == pl.List(pl.UInt16)
    assert table["input_ids"].to_list() == expected_ids(llama_tokenizer,
                                                        [t for _, t in web_docs])
    assert table["id"].to_list() == [d for d, _ in web_docs]
    assert (table["n_tokens"] == table["input_ids"].list.len()).all()


def test_dtype_choice_and_vocabularies_that_do_not_fit(tmp_path, clean_shard, llama_tokenizer):
    assert token_dtype(256) == np.uint8 and token_dtype(32000) == np.uint16
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.int32
    assert token_dtype(32000, "int32") == np.int32
    with pytest.raises(TokenFileError, match="100000 ids does not fit uint16"):
        token_dtype(100_000, "uint16")
    with pytest.raises(TokenFileError, match="not an integer dtype"):
        token_dtype(1000, "float32")
    with pytest.raises(TokenFileError, match="32000 ids does not fit uint8"):
        write_token_files(clean_shard, tmp_path / "out", "web.00000", llama_tokenizer,
                          "megatron", dtype="uint8")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_crash_mid_shard_leaves_the_previous_files_and_no_partial_ones(
        tmp_path, clean_shard, llama_tokenizer):
    out = tmp_path / "out"
    write_token_files(clean_shard, out, "web.00000", llama_tokenizer, "megatron")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(done):
        if done > 100:
            raise KeyboardInterrupt("killed mid-shard")

    with pytest.raises(KeyboardInterrupt):
        write_token_files(clean_shard, out, "web.00000", llama_tokenizer, "megatron",
                          batch_size=64, progress=crash)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files either


def test_shards_without_kept_documents(tmp_path, llama_tokenizer):
    path = tmp_path / "clean.parquet"
    pl.DataFrame({"id": ["a", "b"], "text": ["", "dropped"],
                  "status": ["kept", "dropped_doc"]}).write_parquet(path)
    mega = write_token_files(path, tmp_path / "m", "s", llama_tokenizer, "megatron")
    assert mega.documents == 0 and mega.skipped_empty == 1
    assert read_megatron(tmp_path / "m" / "s") == (np.dtype(np.uint16), [])
    lit = write_token_files(path, tmp_path / "l", "s", llama_tokenizer, "litgpt")
    assert lit.files[0].read_bytes() == b""
    assert pl.read_parquet(lit.files[1]).height == 0
    with pytest.raises(TokenFileError, match="unknown token format 'bin'"):
        write_token_files(path, tmp_path / "x", "s", llama_tokenizer, "bin")


def test_documents_are_tokenized_in_batches_bounded_by_characters(tmp_path):
    """Four 1 MiB pages among short ones: no batch holds more than the character bound unless
    one page alone does, every kept document comes out once and in order, and the row count
    still bounds a batch of short pages."""
    from prox_dagster.token_files import iter_kept_texts

    texts = ["short page"] * 10 + ["w " * (1 << 19)] * 4 + ["another"] * 10
    statuses = ["kept", "dropped_doc"] * 5 + ["kept"] * 4 + ["fallback_raw"] * 10
    path = tmp_path / "clean.parquet"
    pl.DataFrame({"id": [f"d{i}" for i in range(24)], "text": texts,
                  "status": statuses}).write_parquet(path)
    batches = list(iter_kept_texts(path, batch_size=8, max_chars=1 << 20))
    ids = [doc_id for batch_ids, _ in batches for doc_id in batch_ids]
    assert ids == [f"d{i}" for i in range(24) if statuses[i] != "dropped_doc"]
    for batch_ids, batch_texts in batches:
        assert len(batch_ids) <= 8
        assert sum(map(len, batch_texts)) <= 1 << 20 or len(batch_texts) == 1
    assert [len(b) for b, _ in batches] == [5, 1, 1, 1, 1, 8, 2]


@pytest.mark.parametrize("name", ["sample_tokenizer", "llama_tokenizer"])
def test_a_page_longer_than_a_batch_gets_the_ids_of_the_whole_text(tmp_path, request, name):
    """Over 2 MiB a page is tokenized in pieces (its encodings at once would take gigabytes);
    the pieces are cut where the tokenizer cuts, so the ids are those of the whole text, runs
    of spaces and all."""
    tokenizer = request.getfixturevalue(name)
    rng = np.random.default_rng(3)
    words = ["the", "river", "  spaced", "\n", "run  of   spaces", "Straße", "日本語", "x" * 40]
    text = " ".join(words[i] for i in rng.integers(0, len(words), 450_000))
    assert len(text) > 2 * (1 << 20)
    path = tmp_path / "clean.parquet"
    pl.DataFrame({"id": ["long"], "text": [text], "status": ["kept"]}).write_parquet(path)
    stats = write_token_files(path, tmp_path / "out", "s", tokenizer, "parquet")
    written = pl.read_parquet(stats.files[0])["input_ids"][0].to_list()
    assert written == expected_ids(tokenizer, [text])[0]
