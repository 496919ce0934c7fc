"""Data-quality checks of shards, run with Great Expectations 1.x.

``dagster-ge`` does not support GX 1.x, so the checks call GX directly: one ephemeral context per
process, one pandas batch per validation. Each function returns a :class:`CheckOutcome` that the
Dagster layer turns into an ``AssetCheckResult``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pydantic

from . import environment

environment.set_default("GX_ANALYTICS_ENABLED", "false")


class Thresholds(pydantic.BaseModel):
    """Bounds of the blocking checks; the ``checks`` resource is one of these."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    min_doc_parse_rate: float = 0.9
    min_chunk_parse_rate: float = 0.9
    min_token_retention: float = 0.05
    max_token_retention: float = 1.05
    max_quarantine_share: float = 0.5
    min_kept_share: float = 0.02

    @pydantic.model_validator(mode="after")
    def _in_range(self):
        for name in Thresholds.model_fields:
            value = getattr(self, name)
            if not 0.0 <= value <= (2.0 if name == "max_token_retention" else 1.0):
                raise ValueError(f"check threshold {name}={value} is out of range")
        if self.min_token_retention > self.max_token_retention:
            raise ValueError(f"min_token_retention {self.min_token_retention} exceeds "
                             f"max_token_retention {self.max_token_retention}")
        return self


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _batch_definition():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)
    asset = context.data_sources.add_pandas("prox_shards").add_dataframe_asset("shard")
    return asset.add_batch_definition_whole_dataframe("whole_shard")


def _validate(frame: pl.DataFrame, expectation) -> tuple[bool, dict[str, Any]]:
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    result = batch.validate(expectation)
    return bool(result.success), dict(result.result or {})


def _expectations():
    import great_expectations as gx

    return gx.expectations


def parse_rate(parsed: int, rows: int, minimum: float, column: str) -> CheckOutcome:
    """The share of ``rows`` programs that parsed (``parsed`` of them) is at least
    ``minimum``."""
    if rows == 0:
        return CheckOutcome(True, "no programs to check", {"rows": 0, "minimum": minimum})
    rate = parsed / rows
    ok, _ = _validate(pl.DataFrame({column: [rate]}),
                      _expectations().ExpectColumnValuesToBeBetween(
                          column=column, min_value=minimum, max_value=1.0))
    return CheckOutcome(ok, f"{column} rate {rate:.3f} (minimum {minimum})",
                        {"parse_rate": rate, "minimum": minimum, "rows": rows})


# tokens one document weighs at most in a shard's token retention: a 50 MB junk line, rightly
# dropped, weighs as much as a long article, not as the rest of the shard together
RETENTION_DOCUMENT_CAP = 32_768


def token_retention(seen: Mapping, low: float, high: float) -> CheckOutcome:
    """The shard's token retention lies in ``[low, high]``: tokens out / tokens in, each
    document weighing at most :data:`RETENTION_DOCUMENT_CAP` tokens (with its own ratio), so
    that one outlier cannot decide the shard; the outliers are named in the metadata."""
    tokens_in, tokens_out = seen["tokens_in"], seen["tokens_out"]
    weighted_in, weighted_out = seen["weighted_tokens_in"], seen["weighted_tokens_out"]
    if weighted_in == 0:
        return CheckOutcome(True, "shard has no input tokens", {"tokens_in": 0})
    value = weighted_out / weighted_in
    ok, _ = _validate(pl.DataFrame({"retention": [value]}),
                      _expectations().ExpectColumnValuesToBeBetween(
                          column="retention", min_value=low, max_value=high))
    outliers = seen["outliers"]
    return CheckOutcome(ok, f"token retention {value:.3f} (bounds [{low}, {high}]; each "
                        f"document weighs at most {RETENTION_DOCUMENT_CAP} tokens"
                        + (f", {len(outliers)} outliers" if outliers else "") + ")",
                        {"retention": value, "unweighted_retention": tokens_out / tokens_in,
                         "tokens_in": tokens_in, "tokens_out": tokens_out,
                         "document_cap": RETENTION_DOCUMENT_CAP,
                         "outliers": json.dumps(outliers), "min": low, "max": high})


def has_documents(documents: int, quarantined: int, source: str,
                  reasons: dict[str, int]) -> CheckOutcome:
    """The crawl file gave at least one readable document (a file that is not what its name
    says, or whose every record is broken, gives none)."""
    why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "no records"
    return CheckOutcome(documents > 0,
                        f"{documents} documents read from {source}"
                        + ("" if documents else f" ({quarantined} records quarantined: {why})"),
                        {"documents": documents, "quarantined": quarantined, "source": source})


def quarantine_share(documents: int, quarantined: int, maximum: float) -> CheckOutcome:
    """The share of records quarantined is at most ``maximum``: more means the crawl or its
    reader is broken, not a few bad records."""
    total = documents + quarantined
    share = quarantined / total if total else 0.0
    return CheckOutcome(share <= maximum,
                        f"{quarantined} of {total} records quarantined ({share:.1%}, "
                        f"maximum {maximum:.0%})",
                        {"quarantined": quarantined, "records": total, "share": share,
                         "maximum": maximum})


def kept_share(statuses: dict[str, int], minimum: float) -> CheckOutcome:
    """The share of documents kept (refined or raw fallback; ``statuses`` counts the documents
    of each status) is at least ``minimum``: a refiner that drops nearly everything is broken
    or misconfigured, whatever its parse rate."""
    documents = sum(statuses.values())
    if documents == 0:
        return CheckOutcome(False, "the shard has no documents", {"documents": 0})
    kept = statuses.get("kept", 0) + statuses.get("fallback_raw", 0)
    share = kept / documents
    return CheckOutcome(share >= minimum,
                        f"{kept} of {documents} documents kept ({share:.1%}, minimum "
                        f"{minimum:.0%})",
                        {"kept": kept, "documents": documents, "share": share,
                         "minimum": minimum})


EXAMPLES = 3


@dataclass
class ProgramCoverage:
    """What :func:`programs_match_documents` judges, gathered one document at a time (the
    ``clean_shard`` step sees a shard a batch at a time)."""

    kept: int = 0
    unrefined: int = 0
    dropped: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: {"unrefined": [],
                                                                    "dropped": []})
    versions: set[str] = field(default_factory=set)

    def document(self, doc_id: str, keep: bool, text: str | None, has_programs: bool,
                 version: str | None) -> None:
        if version:
            self.versions.add(version)
        if keep:
            self.kept += 1
            # a kept document with no non-blank line has no chunk: it cannot miss programs
            if not has_programs and text and not text.isspace():
                self._note("unrefined", doc_id)
        elif has_programs:
            self._note("dropped", doc_id)

    def programs_without_document(self, doc_id: str) -> None:
        """Chunk programs for a document that ``doc_refined_shard`` does not have (where it is
        expected)."""
        self._note("dropped", doc_id)

    def _note(self, kind: str, doc_id: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(doc_id)

    def outcome(self, stale_upstream: list[str] = ()) -> CheckOutcome:
        versions = sorted(self.versions)
        problems = []
        if self.unrefined:
            problems.append(f"{self.unrefined} kept documents have no chunk programs "
                            f"(e.g. {self.examples['unrefined']})")
        if self.dropped:
            problems.append(f"{self.dropped} dropped documents have chunk programs "
                            f"(e.g. {self.examples['dropped']})")
        if len(versions) > 1:
            problems.append(f"programs come from different refiners {versions}")
        problems.extend(stale_upstream)
        return CheckOutcome(not problems, "; ".join(problems) or
                            f"chunk programs cover exactly the {self.kept} kept documents",
                            {"kept": self.kept, "unrefined": self.unrefined,
                             "dropped_with_programs": self.dropped,
                             "refiners": ", ".join(versions)})


def tokens_written(documents: int, tokens: int, skipped_empty: int, kept: int,
                   file_bytes: list[int]) -> CheckOutcome:
    """Every kept document is in the token files or counted as tokenizing to nothing, and no
    token file is empty while documents were written."""
    problems = []
    if documents + skipped_empty != kept:
        problems.append(f"{documents} documents written + {skipped_empty} empty != {kept} kept "
                        "in clean_shard")
    if documents and (tokens <= 0 or not file_bytes or min(file_bytes) == 0):
        problems.append(f"{documents} documents but {tokens} tokens in "
                        f"{len(file_bytes)} files ({sum(1 for b in file_bytes if b == 0)} empty)")
    if kept and not documents:
        problems.append(f"none of {kept} kept documents has a token")
    return CheckOutcome(not problems, "; ".join(problems) or
                        f"{documents} documents, {tokens} tokens in {len(file_bytes)} files",
                        {"documents": documents, "tokens": tokens, "kept": kept,
                         "skipped_empty": skipped_empty, "files": len(file_bytes)})


def _raw_checks(seen: dict, limits: Thresholds) -> dict[str, CheckOutcome]:
    return {"has_documents": has_documents(seen["documents"], seen["quarantined"],
                                           seen["source"], seen["reasons"]),
            "quarantine_share": quarantine_share(seen["documents"], seen["quarantined"],
                                                 limits.max_quarantine_share)}


def _clean_checks(seen: dict, limits: Thresholds) -> dict[str, CheckOutcome]:
    return {"token_retention": token_retention(seen, limits.min_token_retention,
                                               limits.max_token_retention),
            "kept_share": kept_share(seen["statuses"], limits.min_kept_share),
            "programs_match_documents": CheckOutcome(**seen["programs_match_documents"])}


JUDGES = {
    "raw_shard": _raw_checks,
    "doc_refined_shard": lambda seen, limits: {"doc_parse_rate": parse_rate(
        seen["parsed"], seen["rows"], limits.min_doc_parse_rate, "doc_parse_ok")},
    "chunked_shard": lambda seen, limits: {},
    "chunk_refined_shard": lambda seen, limits: {"chunk_parse_rate": parse_rate(
        seen["parsed"], seen["rows"], limits.min_chunk_parse_rate, "chunk_parse_ok")},
    "clean_shard": _clean_checks,
    "tokenized_shard": lambda seen, limits: {"tokens_written": tokens_written(
        seen["documents"], seen["tokens"], seen["skipped_empty"], seen["kept"],
        seen["file_bytes"])},
}


def judge(stage: str, observations: dict, limits: Thresholds) -> dict[str, CheckOutcome]:
    """The blocking checks of a stage's output, from what the stage observed while writing it
    (``observations``: counts, rates, token totals) and the thresholds: the same function when
    the output is written and when its checks are judged again under other thresholds."""
    return JUDGES[stage](observations, limits)
