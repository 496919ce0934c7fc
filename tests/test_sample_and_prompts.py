import json
from pathlib import Path

import polars as pl

from prox_dagster.prompts import SYSTEM_PROMPT, chunk_prompt, doc_prompt, document_of
from prox_dagster.sample import sample_documents, write_sample_crawl
from prox_dagster.shards import find_raw_shards
from raw_reading import read_raw_shard


def read_labels(labels_dir):
    rows = (json.loads(line) for path in sorted(Path(labels_dir).glob("*.labels.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines())
    return {row["id"]: row for row in rows}


def test_sample_crawl_is_deterministic_and_labelled(tmp_path):
    a = write_sample_crawl(tmp_path / "a", n_shards=2, docs_per_shard=10)
    b = write_sample_crawl(tmp_path / "b", n_shards=2, docs_per_shard=10)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert {p.name.split(".", 2)[2] for p in a} == {"jsonl.gz", "jsonl.zst"}
    labels = read_labels(tmp_path / "a" / "labels")
    docs = pl.concat([read_raw_shard(p).documents for p in a])
    assert set(docs["id"]) == set(labels)
    for doc_id, text in docs.select("id", "text").iter_rows():
        assert len(labels[doc_id]["line_labels"]) == len(text.split("\n"))
    assert list(find_raw_shards(tmp_path / "a" / "raw")[0]) == ["sample-crawl.00000",
                                                            "sample-crawl.00001"]


def test_first_shard_carries_the_malformed_records(tmp_path):
    [first] = write_sample_crawl(tmp_path, n_shards=1, docs_per_shard=10)
    shard = read_raw_shard(first)
    assert shard.documents.height == 10
    assert sorted(shard.quarantine["reason"].str.slice(0, 12)) == ["invalid JSON", "missing text"]


def test_documents_look_like_web_pages():
    docs = sample_documents(50, seed=3)
    assert any(d.junk for d in docs) and any(not d.junk for d in docs)
    article = next(d for d in docs if not d.junk)
    assert "B" in article.line_labels and "M" in article.line_labels


def test_prompts_round_trip_and_use_the_prox_format():
    prompt = chunk_prompt("[000]hello\n[001]world")
    assert prompt.startswith("[INST] <<SYS>>\n" + SYSTEM_PROMPT)
    assert "[doc]\n[000]hello\n[001]world\n[/doc] [/INST]" in prompt
    assert document_of(prompt, "chunk") == "[000]hello\n[001]world"
    assert document_of(doc_prompt("a doc\nwith [/INST] inside"), "doc") == \
        "a doc\nwith [/INST] inside"


def test_doc_prompt_truncates_the_document_not_the_template(llama_tokenizer):
    text = "word " * 5000
    prompt = doc_prompt(text, llama_tokenizer, max_prompt_tokens=200)
    assert prompt.endswith(" [/INST]")
    assert len(llama_tokenizer.encode(prompt)) <= 200 + 2
    reference = doc_prompt(text, llama_tokenizer, max_prompt_tokens=200, truncation="prompt")
    assert not reference.endswith("[/INST]")
    assert len(llama_tokenizer.encode(reference)) <= 201


def test_truncation_encodes_a_prefix_and_cuts_where_the_whole_text_would(llama_tokenizer):
    import random

    from prox_dagster.prompts import truncate_to_tokens

    backend = llama_tokenizer.backend_tokenizer
    rng = random.Random(4)
    words = ["menu", "Ünïcode", "日本語", "  ", "\n", "12,5", "x" * 40, "."]
    for n_words in (0, 3, 50, 400, 4000):
        text = " ".join(rng.choice(words) for _ in range(n_words))
        whole = backend.encode(text, add_special_tokens=False)
        for budget in (1, 7, 100, 1000):
            expected = text if len(whole.ids) <= budget else \
                text[:whole.offsets[budget - 1][1]]
            assert truncate_to_tokens(backend, text, budget) == expected, (n_words, budget)
    assert truncate_to_tokens(backend, "anything", 0) == ""
