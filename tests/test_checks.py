"""The check functions on their own: each fails where it should, and says why."""

import polars as pl
import pytest

from prox_dagster.quality import (Thresholds, has_documents, kept_share, parse_rate,
                                  programs_match_documents, quarantine_share, token_retention,
                                  tokens_written)


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
    assert token_retention(100, 60, 0.5, 1.0).passed
    assert not token_retention(100, 40, 0.5, 1.0).passed
    assert not token_retention(100, 120, 0.5, 1.05).passed
    assert parse_rate(2, 4, 0.5, "ok").passed and not parse_rate(2, 4, 0.75, "ok").passed
    assert "ok rate 0.500 (minimum 0.75)" == parse_rate(2, 4, 0.75, "ok").description
    assert parse_rate(0, 0, 0.9, "ok").passed  # no programs: nothing to judge


def test_thresholds_are_validated_once_in_the_engine():
    with pytest.raises(ValueError, match="min_kept_share"):
        Thresholds(min_kept_share=1.5)
    with pytest.raises(ValueError, match="exceeds"):
        Thresholds(min_token_retention=0.9, max_token_retention=0.5)
