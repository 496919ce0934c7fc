import polars as pl

from prox_dagster.prompts import SYSTEM_PROMPT, chunk_prompt, doc_prompt, document_of
from prox_dagster.sample import read_labels, sample_documents, write_sample_crawl
from prox_dagster.shards import find_raw_shards, read_raw_shard


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
    assert list(find_raw_shards(tmp_path / "a" / "raw")) == ["sample-crawl.00000",
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
