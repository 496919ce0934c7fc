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


def no_empty_kept_text(frame: pl.DataFrame) -> CheckOutcome:
    """Every kept (or raw-fallback) document has non-blank text."""
    kept = frame.filter(pl.col("status").is_in(["kept", "fallback_raw"])).select("id", "text")
    if kept.height == 0:
        return CheckOutcome(True, "no kept documents", {"kept": 0})
    ok, result = _validate(kept, _expectations().ExpectColumnValuesToNotMatchRegex(
        column="text", regex=r"^\s*$"))
    bad = int(result.get("unexpected_count", 0))
    return CheckOutcome(ok, f"{bad} kept documents with empty text",
                        {"kept": kept.height, "empty": bad})


def unique_ids(frame: pl.DataFrame, column: str = "id") -> CheckOutcome:
    if frame.height == 0:
        return CheckOutcome(True, "empty shard", {"rows": 0})
    ok, result = _validate(frame.select(column),
                           _expectations().ExpectColumnValuesToBeUnique(column=column))
    dupes = sorted({str(v) for v in result.get("partial_unexpected_list", [])})[:10]
    return CheckOutcome(ok, f"{result.get('unexpected_count', 0)} rows with a repeated {column}",
                        {"rows": frame.height, "duplicates": ", ".join(dupes)})
