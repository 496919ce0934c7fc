"""How every shard asset runs, reports and caches.

One step materializes one shard, or a batch of them when a backfill groups partitions into runs
(``BackfillPolicy.multi_run``): the refiner model then loads once per batch. For every shard the
step either computes it or, when the stored output was written from the same input files and
settings, skips it as ``cached``. Metadata and check results are recorded per shard. A shard that
raises does not cost the others their work: they are written and recorded before the step fails
naming it.
"""

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import polars as pl
# not exported by dagster 1.13; it is what AssetCheckResult fills in for the checks it evaluates
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData)

from prox_dagster import fingerprint as fp
from prox_dagster.checkpoints import BatchCheckpoints
from prox_dagster.quality import CheckOutcome
from prox_dagster.shards import ShardError
from prox_dagster.store import is_remote
from resources import ShardStorage

from .partitions import shards_partitions_def

# Runs that may still write: a shard leased by one of them is being computed.
IN_FLIGHT = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
             dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
             dg.DagsterRunStatus.CANCELING}

# A run tagged with this recomputes every shard even where a cached output is current.
RECOMPUTE_TAG = "prox/recompute"
OWNERS = ["team:data-platform"]


def shard_asset_settings(stage: str, group: str, shards_per_run: int, code_version: str,
                         kinds: set[str] | None = None) -> dict:
    """What every shard asset shares: shard partitions, backfills batched into runs of
    ``shards_per_run`` shards (all stages alike, so one run carries a batch through the graph),
    the stage's code version (``prox_dagster.fingerprint``), owners and tags."""
    return {"partitions_def": shards_partitions_def, "group_name": group,
            "kinds": kinds or {"polars", "parquet"}, "code_version": code_version,
            "owners": OWNERS, "tags": {"stage": stage.removesuffix("_shard")},
            "backfill_policy": dg.BackfillPolicy.multi_run(max(1, shards_per_run))}


def refiner_asset_settings(stage: str, code_version: str, op_tags: dict | None,
                           shards_per_run: int) -> dict:
    """What both refiner assets add: the ``gpu`` pool and the refiner's per-step resource
    requests."""
    return {**shard_asset_settings(stage, "refine", shards_per_run, code_version),
            "pool": "gpu", "op_tags": op_tags or None}


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
    written: Callable[[], None] | None = None  # called once the output and sidecar are written
    columns: dict[str, str] = field(default_factory=dict)  # of files, when there is no frame


def streamed(writer, **fields) -> ShardOutput:
    """What a stage that wrote its shard a batch at a time (``ShardStore.writer``) computed."""
    return ShardOutput(None, rows_out=writer.rows, files=[writer.record],
                       columns={name: str(dtype) for name, dtype in writer.schema.items()},
                       **fields)


def refiner_checkpoints(context: dg.AssetExecutionContext, storage: ShardStorage,
                        shard: str) -> BatchCheckpoints:
    """The per-batch checkpoints of a refiner step's shard: a killed step resumes from them."""
    return BatchCheckpoints(storage.store, context.asset_key.path[-1], shard,
                            warn=context.log.warning)


class ShardsFailed(Exception):
    """Some shards of a batch raised; the others were written and recorded."""


def run_shards(context: dg.AssetExecutionContext, storage: ShardStorage, *,
               code_version: str, work: Callable[[str], ShardOutput],
               raw_location: Callable[[str], str] | None = None) -> Iterator:
    """Materialize every shard of the step (see the module docstring).

    ``code_version`` is the stage's code version computed from this run's resources (it equals
    the asset's unless run config changed a setting); ``raw_location(shard)`` is the crawl file
    of a raw shard.
    """
    asset = context.asset_key.path[-1]
    if context.assets_def.code_versions_by_key[context.asset_key] != code_version:
        context.log.warning(
            f"{asset}: this run's settings give code version {code_version}, the code location "
            f"was loaded with {context.assets_def.code_versions_by_key[context.asset_key]}; "
            "the shards are fingerprinted with this run's settings")
    keys = context.partition_keys
    recompute = context.run.tags.get(RECOMPUTE_TAG, "").lower() in ("1", "true", "yes")
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for position, shard in enumerate(keys, 1):
        try:
            done[shard] = _one_shard(context, storage, asset, shard, code_version, work,
                                     raw_location(shard) if raw_location else None,
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
            yield dg.AssetMaterialization(
                asset_key=context.asset_key, partition=shard, metadata=summary["metadata"],
                tags={"dagster/data_version": summary["data_version"],
                      "dagster/data_version_is_user_provided": "true",
                      "dagster/code_version": code_version})
        yield from _check_evaluations(context, done)
        raise ShardsFailed(f"{asset}: {len(failed)} of {len(keys)} shards failed "
                           f"(the other {len(done)} are written and recorded): "
                           + "; ".join(f"{s}: {why}" for s, why in failed.items()))
    for shard, summary in done.items():
        context.add_asset_metadata(summary["metadata"], partition_key=shard)
    # One data version per step (Dagster takes one per output): the content of the step's
    # shards, so a cached re-run of the same shards changes nothing downstream.
    batch = hashlib.sha256(json.dumps(sorted((s, d["data_version"]) for s, d in done.items()))
                           .encode()).hexdigest()[:24]
    yield dg.MaterializeResult(data_version=dg.DataVersion(batch))
    yield from _check_evaluations(context, done)
    for output_name in context.assets_def.check_specs_by_output_name:
        yield dg.Output(None, output_name=output_name)


def _one_shard(context, storage, asset, shard, code_version, work, raw_location,
               recompute) -> dict:
    started = time.perf_counter()
    store = storage.store

    def alive(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        return run is not None and run.status in IN_FLIGHT

    def waiting(holder: str) -> None:
        context.log.info(f"shard {shard}: run {holder} is computing {asset}; waiting for it")

    with store.lease(asset, shard, context.run_id, alive, waiting=waiting):
        return _leased_shard(context, store, asset, shard, code_version, work, raw_location,
                             recompute, started)


def _leased_shard(context, store, asset, shard, code_version, work, raw_location, recompute,
                  started) -> dict:
    status = fp.freshness(store, asset, shard, code_version, raw_location)
    if status.state == "missing" and status.fingerprint is None:
        raise ShardError(f"shard {shard!r}: {asset} cannot be computed: {status.reason}; "
                         "materialize the upstream asset for this shard first")
    cached = status.current and not recompute
    if cached:
        summary = status.sidecar
        context.log.info(f"shard {shard}: {asset} is current (inputs and settings unchanged), "
                         "cached")
    else:
        output = work(shard)
        records = ([store.write(output.frame, asset, shard)] if output.frame is not None
                   else output.files)
        summary = {
            # the inputs the fingerprint was computed from, read before the work began
            "fingerprint": status.fingerprint, "code_version": code_version,
            "inputs": status.inputs,
            "run_id": context.run_id,
            "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rows_in": output.rows_in,
            "rows_out": output.frame.height if output.frame is not None else output.rows_out,
            "duration_s": round(time.perf_counter() - started, 3),
            "files": records,
            "columns": _column_types(output.frame) or output.columns,
            # through JSON so fresh and cached shards report exactly the same values
            "checks": json.loads(json.dumps({n: asdict(o) for n, o in output.checks.items()},
                                            default=str)),
            "extra": json.loads(json.dumps(output.extra, default=str)),
        }
        fp.write_sidecar(store, asset, shard, summary)
        if output.written:
            output.written()
        context.log.info(f"shard {shard}: {summary['rows_in']} rows in, "
                         f"{summary['rows_out']} out, {summary['duration_s']:.2f}s -> "
                         f"{store.location(asset)} ({len(records)} files)")
    duration = summary["duration_s"]
    metadata = {
        "shard": shard,
        "cached": cached,
        "dagster/row_count": summary["rows_out"],
        "rows_in": summary["rows_in"],
        "duration_s": duration,
        "rows_per_s": round(summary["rows_in"] / duration, 1) if duration > 0 else 0.0,
        **_file_metadata(store, asset, summary["files"]),
        "fingerprint": summary["fingerprint"],
        **{key: _metadata_value(key, value) for key, value in summary["extra"].items()},
    }
    if summary.get("columns"):
        metadata["dagster/column_schema"] = dg.TableSchema(columns=[
            dg.TableColumn(name, dtype) for name, dtype in summary["columns"].items()])
    content = hashlib.sha256("".join(f["sha256"] for f in summary["files"]).encode())
    return {"metadata": metadata, "checks": summary["checks"],
            "data_version": content.hexdigest()[:24]}


def _column_types(frame: pl.DataFrame | None) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.schema.items()} if frame is not None \
        else {}


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
    """Each shard's check results, tied to the materialization they judged (so the check's
    Partitions tab shows Passed/Failed per shard)."""
    for shard, summary in done.items():
        target = _materialization_of_this_run(context, shard)
        for name, outcome in summary["checks"].items():
            yield dg.AssetCheckEvaluation(
                asset_key=context.asset_key, check_name=name, passed=outcome["passed"],
                description=outcome["description"], metadata=outcome["metadata"],
                blocking=True, partition=shard, target_materialization_data=target)


def _materialization_of_this_run(context, shard: str):
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[shard]),
        limit=1).records
    if not records or records[0].run_id != context.run_id:
        return None
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=records[0].storage_id, run_id=records[0].run_id,
        timestamp=records[0].timestamp)


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
