"""The check functions on their own: each fails where it should, and says why."""

import polars as pl
import pytest

from prox_dagster.quality import (ProgramCoverage, Thresholds, has_documents, kept_share,
                                  parse_rate, quarantine_share, token_retention, tokens_written)


def programs_match_documents(doc_refined, chunk_refined, stale_upstream=()):
    """The coverage check over whole frames, fed as the clean step feeds it batch by batch."""
    coverage = ProgramCoverage()
    refined = set(chunk_refined["doc_id"].to_list())
    coverage.versions.update(chunk_refined["refiner_version"].unique().to_list())
    ids = set()
    for doc_id, keep, text, version in doc_refined.select(
            "id", "doc_keep", "text", "refiner_version").iter_rows():
        ids.add(doc_id)
        coverage.document(doc_id, keep, text, doc_id in refined, version)
    for doc_id in sorted(refined - ids):
        coverage.programs_without_document(doc_id)
    return coverage.outcome(stale_upstream)


def test_tokens_written_fails_on_missing_documents_and_empty_files():
    assert tokens_written(5, 400, 1, 6, [900, 800]).passed
    lost = tokens_written(4, 400, 1, 6, [900])
    assert not lost.passed and "4 documents written + 1 empty != 6 kept" in lost.description
    empty_file = tokens_written(5, 400, 1, 6, [900, 0])
    assert not empty_file.passed and "1 empty" in empty_file.description
    nothing = tokens_written(0, 0, 3, 3, [])
    assert not nothing.passed and "none of 3 kept documents" in nothing.description
    assert tokens_written(0, 0, 0, 0, []).passed  # a shard that kept nothing writes nothing


def test_programs_match_documents_names_what_does_not_belong_together():
    docs = pl.DataFrame({"id": ["a", "b", "c", "d"], "doc_keep": [True, True, False, True],
                         "text": ["x y", "z", "w", "  \n "], "refiner_version": ["r1"] * 4})
    chunks = pl.DataFrame({"doc_id": ["a", "b"], "refiner_version": ["r1", "r1"]})
    assert programs_match_documents(docs, chunks).passed  # d has no text: no chunk to refine
    other = programs_match_documents(docs, chunks.with_columns(
        pl.lit("r2").alias("refiner_version")))
    assert not other.passed and "different refiners ['r1', 'r2']" in other.description
    shifted = programs_match_documents(docs, pl.DataFrame(
        {"doc_id": ["a", "c"], "refiner_version": ["r1", "r1"]}))
    assert not shifted.passed
    assert "1 kept documents have no chunk programs (e.g. ['b'])" in shifted.description
    assert "1 dropped documents have chunk programs (e.g. ['c'])" in shifted.description
    stale = programs_match_documents(docs, chunks, ["chunked_shard is stale (input changed)"])
    assert not stale.passed and stale.description == "chunked_shard is stale (input changed)"


def test_the_raw_and_clean_checks_fail_at_their_thresholds():
    assert not has_documents(0, 3, "x.jsonl.gz", {"invalid JSON": 3}).passed
    assert "3 invalid JSON" in has_documents(0, 3, "x.jsonl.gz", {"invalid JSON": 3}).description
    assert has_documents(1, 0, "x.jsonl", {}).passed
    assert quarantine_share(8, 2, 0.2).passed and not quarantine_share(8, 3, 0.2).passed
    statuses = {"kept": 1, "dropped_doc": 1, "fallback_raw": 1, "dropped_chunk": 1}
    assert kept_share(statuses, 0.5).passed and not kept_share(statuses, 0.51).passed
    assert not kept_share({}, 0.0).passed
    assert token_retention(_seen(100, 60), 0.5, 1.0).passed
    assert not token_retention(_seen(100, 40), 0.5, 1.0).passed
    assert not token_retention(_seen(100, 120), 0.5, 1.05).passed
    assert parse_rate(2, 4, 0.5, "ok").passed and not parse_rate(2, 4, 0.75, "ok").passed
    assert "ok rate 0.500 (minimum 0.75)" == parse_rate(2, 4, 0.75, "ok").description
    assert parse_rate(0, 0, 0.9, "ok").passed  # no programs: nothing to judge


def _seen(tokens_in, tokens_out):
    return {"tokens_in": tokens_in, "tokens_out": tokens_out, "weighted_tokens_in": tokens_in,
            "weighted_tokens_out": tokens_out, "outliers": []}


def test_one_huge_dropped_document_does_not_decide_the_shards_retention(sample_tokenizer):
    """40 pages kept almost whole and one 1.8-million-character junk line, rightly dropped:
    unweighted, the shard would keep a few percent of its tokens and fail; each document
    weighing at most the cap, it keeps most, passes, and names the outlier."""
    from prox_dagster.parquet_batches import FrameSink, FrameSource
    from prox_dagster.pipeline import execute_stream
    from prox_dagster.quality import RETENTION_DOCUMENT_CAP, judge

    pages = [" ".join(f"word{i}{j}" for j in range(300)) for i in range(40)]
    junk = "zq " * 600_000
    docs = pl.DataFrame({"id": [f"p{i}" for i in range(40)] + ["junk"],
                         "text": pages + [junk],
                         "doc_program": ["keep_doc()"] * 40 + ["drop_doc()"],
                         "doc_keep": [True] * 40 + [False],
                         "refiner_version": ["v"] * 41})
    chunks = pl.DataFrame(schema={"doc_id": pl.String, "chunk_index": pl.Int32,
                                  "line_start": pl.Int32, "line_end": pl.Int32,
                                  "chunk_program": pl.String, "refiner_version": pl.String,
                                  "program_dialect": pl.String})
    summary = execute_stream(FrameSource(docs), FrameSource(chunks), FrameSink(),
                             sample_tokenizer)
    assert summary.tokens_out / summary.tokens_in < 0.05  # what the old check judged
    seen = {"tokens_in": summary.tokens_in, "tokens_out": summary.tokens_out,
            "weighted_tokens_in": summary.weighted_in,
            "weighted_tokens_out": summary.weighted_out, "outliers": summary.outliers,
            "statuses": dict(summary.statuses),
            "programs_match_documents": {"passed": True, "description": "", "metadata": {}}}
    outcome = judge("clean_shard", seen, Thresholds())["token_retention"]
    assert outcome.passed and outcome.metadata["retention"] > 0.5
    assert [o["id"] for o in summary.outliers] == ["junk"]
    assert summary.outliers[0]["tokens_in"] > RETENTION_DOCUMENT_CAP
    assert '"junk"' in outcome.metadata["outliers"] and "1 outliers" in outcome.description
    # a shard whose pages lose most of their text still fails
    lost = {**seen, "weighted_tokens_out": 0.02 * summary.weighted_in}
    assert not judge("clean_shard", lost, Thresholds())["token_retention"].passed


def test_thresholds_are_validated_once_in_the_engine():
    with pytest.raises(ValueError, match="min_kept_share"):
        Thresholds(min_kept_share=1.5)
    with pytest.raises(ValueError, match="exceeds"):
        Thresholds(min_token_retention=0.9, max_token_retention=0.5)
