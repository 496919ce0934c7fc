"""How every shard asset runs, reports and caches.

One step materializes one shard, or a batch of them when a backfill groups partitions into runs
(``BackfillPolicy.multi_run``): the refiner model then loads once per batch. For every shard the
step either computes it or, when the stored output was written from the same input files and
settings, skips it as ``cached``. Metadata and check results are recorded per shard. A shard that
raises does not cost the others their work: they are written and recorded before the step fails
naming it.
"""

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import polars as pl

from prox_dagster.lineage import input_fingerprint
from prox_dagster.quality import CheckOutcome
from prox_dagster.shards import ShardError
from prox_dagster.store import content_id, exists, is_remote
from resources import ShardStorage

from .partitions import shards_partitions_def

# Part of every input fingerprint: bump it when a stage's code writes different rows for the
# same inputs and settings, so stored shards stop counting as cached.
STAGE_FORMAT_VERSION = "1"

# A run tagged with this recomputes every shard even where a cached output is current.
RECOMPUTE_TAG = "prox/recompute"


def shard_asset_settings(group: str, shards_per_run: int) -> dict:
    """What every shard asset shares: shard partitions, and backfills batched into runs of
    ``shards_per_run`` shards (all stages alike, so one run carries a batch through the graph)."""
    return {"partitions_def": shards_partitions_def, "group_name": group,
            "kinds": {"polars", "parquet"},
            "backfill_policy": dg.BackfillPolicy.multi_run(max(1, shards_per_run))}


def refiner_asset_settings(code_version: str, op_tags: dict | None,
                           shards_per_run: int) -> dict:
    """What both refiner assets add: the ``gpu`` pool, the refiner version as code version and
    the refiner's per-step resource requests."""
    return {**shard_asset_settings("refine", shards_per_run), "pool": "gpu",
            "code_version": code_version, "op_tags": op_tags or None}


def shard_checks(asset: str, checks: Mapping[str, str]) -> list[dg.AssetCheckSpec]:
    """Blocking checks evaluated per shard partition."""
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True, description=text,
                              partitions_def=shards_partitions_def)
            for name, text in checks.items()]


@dataclass
class ShardOutput:
    """What a stage computed for one shard: a ``frame`` for the store to write, or the records
    of ``files`` the stage wrote and published itself. ``extra`` values must be JSON; a dict is
    shown as a count table, a key ending in ``_path`` as a location, one ending in ``_preview``
    as Markdown."""

    frame: pl.DataFrame | None
    rows_in: int
    rows_out: int | None = None
    files: list[dict] = field(default_factory=list)  # ShardStore.publish records
    checks: dict[str, CheckOutcome] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class ShardsFailed(Exception):
    """Some shards of a batch raised; the others were written and recorded."""


def run_shards(context: dg.AssetExecutionContext, storage: ShardStorage, *,
               settings: str, inputs: Callable[[str], list[str]],
               work: Callable[[str], ShardOutput]) -> Iterator:
    """Materialize every shard of the step (see the module docstring).

    ``settings`` is everything besides the input files that shapes the rows and check results
    (refiner version, tokenizer, thresholds); ``inputs(shard)`` lists the input files'
    locations.
    """
    asset = context.asset_key.path[-1]
    keys = context.partition_keys
    recompute = context.run.tags.get(RECOMPUTE_TAG, "").lower() in ("1", "true", "yes")
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for position, shard in enumerate(keys, 1):
        try:
            done[shard] = _one_shard(context, storage, asset, shard, settings, inputs, work,
                                     recompute)
        except Exception as exc:
            if len(keys) == 1:
                raise
            failed[shard] = f"{type(exc).__name__}: {exc}"
            context.log.error(f"shard {shard}: {failed[shard]}")
        if len(keys) > 1:
            context.log.info(f"{asset}: {position}/{len(keys)} shards "
                             f"({len(failed)} failed)")

    if failed:
        for shard, summary in done.items():
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=shard,
                                          metadata=summary["metadata"])
        yield from _check_evaluations(context, done)
        raise ShardsFailed(f"{asset}: {len(failed)} of {len(keys)} shards failed "
                           f"(the other {len(done)} are written and recorded): "
                           + "; ".join(f"{s}: {why}" for s, why in failed.items()))
    for shard, summary in done.items():
        context.add_asset_metadata(summary["metadata"], partition_key=shard)
    yield dg.MaterializeResult()
    yield from _check_evaluations(context, done)
    for output_name in context.assets_def.check_specs_by_output_name:
        yield dg.Output(None, output_name=output_name)


def _one_shard(context, storage, asset, shard, settings, inputs, work, recompute) -> dict:
    started = time.perf_counter()
    store = storage.store
    files = inputs(shard)
    for file in files:
        if not exists(file):
            raise ShardError(f"shard {shard!r}: {asset} reads {file!r}, which does not "
                             "exist; materialize the upstream asset for this shard first")
    fingerprint = input_fingerprint(asset, f"{STAGE_FORMAT_VERSION}|{settings}",
                                    {f.rsplit("/", 2)[-2]: content_id(f) for f in files})
    stored = store.provenance(asset, shard)
    cached = (not recompute and stored is not None and stored.get("fingerprint") == fingerprint
              and all(exists(store.location(asset, f["name"])) for f in stored["files"]))
    if cached:
        summary = stored
        context.log.info(f"shard {shard}: {asset} is current (inputs and settings unchanged), "
                         "cached")
    else:
        output = work(shard)
        records = ([store.write(output.frame, asset, shard)] if output.frame is not None
                   else output.files)
        summary = {
            "fingerprint": fingerprint, "settings": settings,
            "rows_in": output.rows_in,
            "rows_out": output.frame.height if output.frame is not None else output.rows_out,
            "duration_s": round(time.perf_counter() - started, 3),
            "files": records,
            # through JSON so fresh and cached shards report exactly the same values
            "checks": json.loads(json.dumps({n: asdict(o) for n, o in output.checks.items()},
                                            default=str)),
            "extra": json.loads(json.dumps(output.extra, default=str)),
        }
        store.write_provenance(asset, shard, summary)
        context.log.info(f"shard {shard}: {summary['rows_in']} rows in, "
                         f"{summary['rows_out']} out, {summary['duration_s']:.2f}s -> "
                         f"{store.location(asset)} ({len(records)} files)")
    duration = summary["duration_s"]
    metadata = {
        "shard": shard,
        "cached": cached,
        "rows_in": summary["rows_in"],
        "rows_out": summary["rows_out"],
        "duration_s": duration,
        "rows_per_s": round(summary["rows_in"] / duration, 1) if duration > 0 else 0.0,
        **_file_metadata(store, asset, summary["files"]),
        "input_fingerprint": fingerprint,
        **{key: _metadata_value(key, value) for key, value in summary["extra"].items()},
    }
    return {"metadata": metadata, "checks": summary["checks"]}


def location_value(location: str) -> dg.MetadataValue:
    """A file's location as metadata: a path locally, a URL on S3."""
    return dg.MetadataValue.url(location) if is_remote(location) \
        else dg.MetadataValue.path(location)


def _file_metadata(store, asset: str, files: list[dict]) -> dict:
    if len(files) == 1:
        return {"path": location_value(store.location(asset, files[0]["name"])),
                "sha256": files[0]["sha256"]}
    rows = "\n".join(f"| {f['name']} | {f['bytes']} | {f['sha256']} |" for f in files)
    return {"files": len(files),
            "file_table": dg.MetadataValue.md(
                "| file | bytes | sha256 |\n|---|---|---|\n" + rows if rows else "(none)")}


def _metadata_value(key: str, value: Any):
    if isinstance(value, dict):
        return counts_table(value, key)
    if key.endswith("_path") and isinstance(value, str):
        return location_value(value)
    if key.endswith("_preview") and isinstance(value, str):
        return dg.MetadataValue.md(value)
    return value


def _check_evaluations(context: dg.AssetExecutionContext,
                       done: dict[str, dict]) -> Iterator[dg.AssetCheckEvaluation]:
    for shard, summary in done.items():
        for name, outcome in summary["checks"].items():
            yield dg.AssetCheckEvaluation(
                asset_key=context.asset_key, check_name=name, passed=outcome["passed"],
                description=outcome["description"], metadata=outcome["metadata"],
                blocking=True, partition=shard)


def counts_table(counts: Mapping[str, int], key: str = "value") -> dg.MetadataValue:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items()))
    return dg.MetadataValue.md(f"| {key} | count |\n|---|---|\n{rows}" if rows else "(none)")


def progress_logger(context: dg.AssetExecutionContext, what: str):
    """A progress callback that logs about every tenth of the work."""
    state = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if total and done / total >= state["next"]:
            context.log.info(f"{what}: {done}/{total}")
            state["next"] = done / total + 0.1

    return report


def refiner_metadata(refiner, asset_code_version: str | None,
                     context: dg.AssetExecutionContext) -> dict:
    if asset_code_version and refiner.version not in asset_code_version:
        context.log.warning(
            f"refiner {refiner.version} differs from the code version {asset_code_version} "
            "these definitions were loaded with; reload the code location so staleness is right")
    return {"refiner_version": refiner.version, "refiner_backend": refiner.backend,
            "model_id": refiner.model_id}
