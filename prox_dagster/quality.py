"""Data-quality checks of shards, run with Great Expectations 1.x.

``dagster-ge`` does not support GX 1.x, so the checks call GX directly: one ephemeral context per
process, one pandas batch per validation. Each function returns a :class:`CheckOutcome` that the
Dagster layer turns into an ``AssetCheckResult``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

import polars as pl

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class Thresholds:
    """Configurable bounds of the checks."""

    min_doc_parse_rate: float = 0.9
    min_chunk_parse_rate: float = 0.9
    min_token_retention: float = 0.05
    max_token_retention: float = 1.05
    max_quarantine_share: float = 0.5
    min_kept_share: float = 0.02

    def __post_init__(self):
        for name, value in vars(self).items():
            if not 0.0 <= value <= (2.0 if name == "max_token_retention" else 1.0):
                raise ValueError(f"check threshold {name}={value} is out of range")
        if self.min_token_retention > self.max_token_retention:
            raise ValueError(f"min_token_retention {self.min_token_retention} exceeds "
                             f"max_token_retention {self.max_token_retention}")


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


def parse_rate(frame: pl.DataFrame, column: str, minimum: float) -> CheckOutcome:
    """The share of rows whose program parsed (``column`` is boolean) is at least ``minimum``."""
    if frame.height == 0:
        return CheckOutcome(True, "no programs to check", {"rows": 0})
    ok, result = _validate(frame.select(pl.col(column).cast(pl.Int8)),
                           _expectations().ExpectColumnMeanToBeBetween(column=column,
                                                                       min_value=minimum))
    observed = float(result.get("observed_value", 0.0))
    return CheckOutcome(ok, f"{column} rate {observed:.3f} (minimum {minimum})",
                        {"parse_rate": observed, "minimum": minimum, "rows": frame.height})


def token_retention(frame: pl.DataFrame, low: float, high: float) -> CheckOutcome:
    """Tokens out / tokens in over the shard lies in ``[low, high]``."""
    tokens_in = int(frame["tokens_in"].sum()) if frame.height else 0
    tokens_out = int(frame["tokens_out"].sum()) if frame.height else 0
    if tokens_in == 0:
        return CheckOutcome(True, "shard has no input tokens", {"tokens_in": 0})
    ratio = pl.DataFrame({"retention": [tokens_out / tokens_in]})
    ok, _ = _validate(ratio, _expectations().ExpectColumnValuesToBeBetween(
        column="retention", min_value=low, max_value=high))
    value = tokens_out / tokens_in
    return CheckOutcome(ok, f"token retention {value:.3f} (bounds [{low}, {high}])",
                        {"retention": value, "tokens_in": tokens_in, "tokens_out": tokens_out,
                         "min": low, "max": high})


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


def kept_share(frame: pl.DataFrame, minimum: float) -> CheckOutcome:
    """The share of documents kept (refined or raw fallback) is at least ``minimum``: a refiner
    that drops nearly everything is broken or misconfigured, whatever its parse rate."""
    if frame.height == 0:
        return CheckOutcome(False, "the shard has no documents", {"documents": 0})
    kept = int(frame["status"].is_in(["kept", "fallback_raw"]).sum())
    share = kept / frame.height
    return CheckOutcome(share >= minimum,
                        f"{kept} of {frame.height} documents kept ({share:.1%}, minimum "
                        f"{minimum:.0%})",
                        {"kept": kept, "documents": frame.height, "share": share,
                         "minimum": minimum})


def programs_match_documents(doc_refined: pl.DataFrame, chunk_refined: pl.DataFrame,
                             stale_upstream: list[str] = ()) -> CheckOutcome:
    """The chunk programs were written for this doc decision by the same refiner: every kept
    document has chunk programs, no dropped one has, both levels name one refiner, and no
    upstream stage is stale (``stale_upstream`` describes those that are)."""
    kept = set(doc_refined.filter(pl.col("doc_keep"))["id"].to_list())
    refined = set(chunk_refined["doc_id"].unique().to_list()) if chunk_refined.height else set()
    # a kept document with no non-blank line has no chunk: it cannot be missing programs
    has_text = set(doc_refined.filter(pl.col("doc_keep")
                                      & pl.col("text").str.contains(r"\S"))["id"].to_list())
    unrefined = sorted(has_text - refined)
    dropped = sorted(refined - kept)
    versions = sorted(set(doc_refined["refiner_version"].unique().to_list())
                      | (set(chunk_refined["refiner_version"].unique().to_list())
                         if chunk_refined.height else set()))
    problems = []
    if unrefined:
        problems.append(f"{len(unrefined)} kept documents have no chunk programs "
                        f"(e.g. {unrefined[:3]})")
    if dropped:
        problems.append(f"{len(dropped)} dropped documents have chunk programs "
                        f"(e.g. {dropped[:3]})")
    if len(versions) > 1:
        problems.append(f"programs come from different refiners {versions}")
    problems.extend(stale_upstream)
    return CheckOutcome(not problems, "; ".join(problems) or
                        f"chunk programs cover exactly the {len(kept)} kept documents",
                        {"kept": len(kept), "unrefined": len(unrefined),
                         "dropped_with_programs": len(dropped), "refiners": ", ".join(versions)})


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
