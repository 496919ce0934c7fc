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
# not exported by dagster 1.13; it is what AssetCheckResult fills in for the checks it evaluates
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData)

from prox_dagster import fingerprint as fp
from prox_dagster.stages import RAW_INPUT
from prox_dagster import outputs
from prox_dagster.checkpoints import BatchCheckpoints
from prox_dagster.leases import run_heartbeat
from prox_dagster.outputs import RawFile, Staging
from prox_dagster.quality import CheckOutcome, Thresholds, judge
from prox_dagster.shards import SCHEMAS, ShardError
from prox_dagster.store import is_remote
from prox_dagster.resources import ShardStorage

from .partitions import shards_partitions_def

# Runs that may still write (a STARTED one, while its heartbeat says its worker is alive).
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
    # the columns once, on the asset, rather than in every shard's materialization
    schema = ({"dagster/column_schema": dg.TableSchema(columns=[
        dg.TableColumn(name, str(dtype)) for name, dtype in SCHEMAS[stage].items()])}
        if stage in SCHEMAS else {})
    return {"partitions_def": shards_partitions_def, "group_name": group,
            "kinds": kinds or {"polars", "parquet"}, "code_version": code_version,
            "owners": OWNERS, "tags": {"stage": stage.removesuffix("_shard")},
            "metadata": schema,
            "backfill_policy": dg.BackfillPolicy.multi_run(max(1, shards_per_run))}


def refiner_asset_settings(stage: str, code_version: str, op_tags: dict | None,
                           shards_per_run: int, gpu: bool) -> dict:
    """What both refiner assets add: the refiner's per-step resource requests and, for a
    refiner on this machine's GPU, the ``gpu`` pool (one step per GPU across runs; CPU and
    remote refiners claim no pool)."""
    return {**shard_asset_settings(stage, "refine", shards_per_run, code_version),
            "pool": "gpu" if gpu else None, "op_tags": op_tags or None}


CURRENT_CHECK = "current"
CURRENT_DESCRIPTION = ("The shard's published output is what its inputs' current content and "
                       "the loaded settings give; when not, the setting that changed with its "
                       "old and new values, or the input that changed. Evaluated by each run, "
                       "the refine schedule and the lineage audit.")


def shard_checks(asset: str, checks: Mapping[str, str]) -> list[dg.AssetCheckSpec]:
    """Blocking checks evaluated per shard partition, and the non-blocking ``current``."""
    return [*(dg.AssetCheckSpec(name, asset=asset, blocking=True, description=text,
                                partitions_def=shards_partitions_def)
              for name, text in checks.items()),
            dg.AssetCheckSpec(CURRENT_CHECK, asset=asset, blocking=False,
                              description=CURRENT_DESCRIPTION,
                              partitions_def=shards_partitions_def)]


@dataclass
class ShardOutput:
    """What a stage wrote for one shard into its staging folder. ``observations`` (JSON) are
    what its blocking checks judge (``prox_dagster.quality.judge``); ``extra`` values (JSON) are
    shown as metadata: a dict as a count table, a key ending in ``_path`` as a location, one
    ending in ``_preview`` as Markdown."""

    rows_in: int
    rows_out: int
    observations: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    written: Callable[[], None] | None = None  # called once the output is committed


def streamed(writer, **fields) -> ShardOutput:
    """What a stage that wrote its shard a batch at a time (``Staging.writer``) computed."""
    return ShardOutput(rows_out=writer.rows,
                       columns={name: str(dtype) for name, dtype in writer.schema.items()},
                       **fields)


@dataclass
class ShardJob:
    """One shard to compute: where to write it, and the fingerprint its output will carry."""

    shard: str
    staging: Staging
    fingerprint: str


def refiner_checkpoints(context: dg.AssetExecutionContext, storage: ShardStorage,
                        job: ShardJob, refiner) -> BatchCheckpoints | None:
    """The per-batch checkpoints of a refiner step's shard, under its fingerprint (the refiner
    version and the input's content): a killed step resumes from them, and a shard whose input
    changed never resumes from another input's programs. None for a refiner that calls no
    model (rules, classifier): it writes a batch's programs faster than a checkpoint is
    written and read, and a shard's files would grow by a folder and two files per stage."""
    if not refiner.calls_model:
        return None
    return BatchCheckpoints(storage.store, context.asset_key.path[-1], job.shard,
                            job.fingerprint, warn=context.log.warning)



class ShardsFailed(Exception):
    """Some shards of a batch raised; the others were written and recorded."""


def run_shards(context: dg.AssetExecutionContext, storage: ShardStorage, *,
               expected: fp.StageSettings, limits: Thresholds,
               work: Callable[[ShardJob], ShardOutput],
               raw_file: Callable[[str], RawFile] | None = None) -> Iterator:
    """Materialize every shard of the step (see the module docstring).

    ``expected`` is the stage's settings from this run's resources (its code version equals
    the asset's unless run config changed a setting) and ``limits`` the check thresholds;
    ``raw_file(shard)`` is the crawl file of a raw shard.
    """
    asset = context.asset_key.path[-1]
    loaded = context.assets_def.code_versions_by_key[context.asset_key]
    if loaded != expected.code_version:
        context.log.warning(
            f"{asset}: this run's settings give code version {expected.code_version}, the code "
            f"location was loaded with {loaded}; the shards are fingerprinted with this run's "
            "settings")
    keys = context.partition_keys
    recompute = context.run.tags.get(RECOMPUTE_TAG, "").lower() in ("1", "true", "yes")
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    with run_heartbeat(storage.store, context.run_id):
        for shard in keys:
            try:
                done[shard] = _one_shard(context, storage, asset, shard, expected, limits,
                                         work, raw_file, recompute)
            except Exception as exc:
                if len(keys) == 1:
                    raise
                failed[shard] = f"{type(exc).__name__}: {exc}"
                context.log.error(f"shard {shard}: {failed[shard]}")
    # a line per shard computed (its own), one for all the shards cached: every log line is
    # an event in the run's storage, and most shards of a pass are cached
    reused = [shard for shard, summary in done.items() if summary["reused"]]
    if reused:
        context.log.info(f"{asset}: {len(reused)} of {len(keys)} shards cached (inputs and "
                         f"settings unchanged): {_named(reused)}")

    if failed:
        for shard, summary in done.items():
            yield dg.AssetMaterialization(
                asset_key=context.asset_key, partition=shard, metadata=summary["metadata"],
                tags={"dagster/data_version": summary["data_version"],
                      "dagster/data_version_is_user_provided": "true",
                      "dagster/code_version": expected.code_version})
        yield from _check_evaluations(context, done)
        raise ShardsFailed(f"{asset}: {len(failed)} of {len(keys)} shards failed "
                           f"(the other {len(done)} are written and recorded): "
                           + "; ".join(f"{s}: {why}" for s, why in failed.items()))
    _add_shard_metadata(context, {shard: summary["metadata"] for shard, summary in done.items()})
    # One data version per step (Dagster takes one per output): the content of the step's
    # shards, so a cached re-run of the same shards changes nothing downstream.
    batch = hashlib.sha256(json.dumps(sorted((s, d["data_version"]) for s, d in done.items()))
                           .encode()).hexdigest()[:24]
    yield dg.MaterializeResult(data_version=dg.DataVersion(batch))
    yield from _check_evaluations(context, done)
    for output_name in context.assets_def.check_specs_by_output_name:
        yield dg.Output(None, output_name=output_name)


def _add_shard_metadata(context: dg.AssetExecutionContext,
                        metadata: Mapping[str, Mapping[str, Any]]) -> None:
    """Each shard's metadata on its own materialization of this step. What
    ``context.add_asset_metadata(partition_key=)`` does, less its check that the key is in the
    step's range: dagster 1.13 lists every shard partition for that check, about 0.3 s a call
    with 10⁵ shards registered (half a minute of a 16-shard run); these keys are the step's own
    (``context.partition_keys``). The accumulator is private to dagster (pinned in
    pyproject.toml); ``tests/test_batches.py`` reads each shard's own metadata back."""
    step = context._step_execution_context  # noqa: SLF001
    for shard, values in metadata.items():
        step._metadata_accumulator = (  # noqa: SLF001
            step._metadata_accumulator.with_additional_asset_metadata(  # noqa: SLF001
                asset_key=context.asset_key, partition_key=shard, metadata=values))


def _one_shard(context, storage, asset, shard, expected, limits, work, raw_file,
               recompute) -> dict:
    def waiting(holder: str) -> None:
        context.log.info(f"shard {shard}: {holder} is computing {asset}; waiting for it")

    with storage.store.lease(asset, shard, context.run_id, waiting=waiting) as lease:
        raw = raw_file(shard) if raw_file else None
        return _leased_shard(context, storage.store, asset, shard, expected, limits, work,
                             raw, recompute, lease)


def _leased_shard(context, store, asset, shard, expected, limits, work, raw, recompute,
                  lease) -> dict:
    started = time.perf_counter()
    status = outputs.freshness(store, expected, shard, raw, warn=context.log.warning)
    if status.state == "missing" and status.fingerprint is None:
        raise ShardError(f"shard {shard!r}: {asset} cannot be computed: {status.reason}; "
                         "materialize the upstream asset for this shard first")
    rechecked = False
    if status.state in ("current", "failed") and not recompute:
        record = status.record
    elif status.recheck and not recompute:
        record = status.record
        checks = _outcomes(judge(asset, record.data.get("observations") or {}, limits))
        passed = all(c["passed"] for c in checks.values())
        lease.check()
        record = outputs.rewrite(store, record, {
            **record.data, "judged_with": dict(expected.thresholds), "checks": checks,
            "judged_at": _now(), "judged_by": context.run_id}, passed)
        rechecked = True
        context.log.info(f"shard {shard}: {asset} judged again ({status.reason}): "
                         + ("passed" if passed else "failed"))
    else:
        with outputs.staging(store, asset, shard) as staged:
            output = work(ShardJob(shard, staged, status.fingerprint))
            checks = _outcomes(judge(asset, output.observations, limits))
            passed = all(c["passed"] for c in checks.values())
            data = {
                # the inputs the fingerprint was computed from, read before the work began
                "fingerprint": status.fingerprint, "code_version": expected.code_version,
                "settings": dict(expected.settings), "inputs": status.inputs,
                "judged_with": dict(expected.thresholds),
                "run_id": context.run_id, "written_at": _now(),
                "rows_in": output.rows_in, "rows_out": output.rows_out,
                "duration_s": round(time.perf_counter() - started, 3),
                "columns": output.columns, "observations": _json(output.observations),
                "checks": checks, "extra": _json(output.extra)}
            if raw is not None:
                data["raw_file"] = {"location": raw.location, "version": raw.version,
                                    "content_id": status.inputs[RAW_INPUT]}
            lease.check()
            record = staged.commit(data, passed)
        if output.written:
            output.written()
        context.log.info(f"shard {shard}: {record.data['rows_in']} rows in, "
                         f"{record.data['rows_out']} out, {record.data['duration_s']:.2f}s -> "
                         f"{outputs.folder(store, asset, record.kind)} ({len(record.files)} "
                         f"files{'' if passed else '; a blocking check failed: not published'})")
    if record.data["run_id"] != context.run_id and not rechecked:
        return _reused(record)
    return _summary(store, asset, record, cached=rechecked, rechecked=rechecked)


def _named(shards: list[str], shown: int = 5) -> str:
    return ", ".join(shards[:shown]) + (f" and {len(shards) - shown} more"
                                        if len(shards) > shown else "")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _json(value: Any) -> Any:
    # through JSON so fresh and cached shards report exactly the same values
    return json.loads(json.dumps(value, default=str))


def _outcomes(checks: Mapping[str, CheckOutcome]) -> dict[str, dict]:
    return _json({name: asdict(outcome) for name, outcome in checks.items()})


def _reused(record: fp.Record) -> dict:
    """A cached shard's report: a fixed handful of values (under 2 KB in the event log whatever
    the stage) and a link to the run that wrote it (or judged it again), whose materialization
    and check results hold the rest. A pass over a corpus is mostly cached shards, so this is
    what a pass costs the run storage (``definitions.latest_metadata`` follows the link)."""
    data = record.data
    checks = data.get("checks") or {}
    reported_by = dg.MetadataValue.dagster_run(data.get("judged_by") or data["run_id"])
    metadata = {"cached": True, "published": record.kind == outputs.PUBLISHED,
                "dagster/row_count": data.get("rows_out", 0),
                "fingerprint": record.fingerprint,
                REPORTED_BY: reported_by}
    return {"metadata": metadata, "reused": True, "data_version": record.data_id[:24],
            "checks": {name: {"passed": outcome["passed"],
                              "description": _short(outcome["description"]),
                              "metadata": {REPORTED_BY: reported_by}}
                       for name, outcome in checks.items()},
            "current": {**_current(record), "metadata": {}}}


REPORTED_BY = "reported_by_run"  # a cached shard's link to the run that reported it in full
SHORT_DESCRIPTION = 120  # a cached check's: the run it links to holds the whole


def _short(text: str) -> str:
    return text if len(text) <= SHORT_DESCRIPTION else text[:SHORT_DESCRIPTION - 3] + "..."


def _summary(store, asset: str, record: fp.Record, *, cached: bool, rechecked: bool) -> dict:
    data = record.data
    duration = data.get("duration_s", 0.0)
    published = record.kind == outputs.PUBLISHED
    metadata = {
        "shard": record.shard,
        "cached": cached,
        "rechecked": rechecked,
        "published": published,
        "dagster/row_count": data.get("rows_out", 0),
        "rows_in": data.get("rows_in", 0),
        "duration_s": duration,
        "rows_per_s": round(data.get("rows_in", 0) / duration, 1) if duration > 0 else 0.0,
        **_file_metadata(store, record),
        "fingerprint": record.fingerprint,
        **{key: _metadata_value(key, value) for key, value in record.extra.items()},
    }
    return {"metadata": metadata, "checks": data.get("checks") or {},
            "current": _current(record), "data_version": record.data_id[:24], "reused": False}


def _current(record: fp.Record) -> dict:
    # the output is what its inputs and this run's settings give, published or not: whether
    # it passed is its blocking checks' to say
    published = record.kind == outputs.PUBLISHED
    return {"passed": True,
            "description": "written from its inputs' current content with the settings this "
                           "run loaded" + ("" if published else
                                           f"; not published: "
                                           f"{', '.join(record.failed_checks)} failed"),
            "metadata": {"fingerprint": record.fingerprint, "published": published}}


def location_value(location: str) -> dg.MetadataValue:
    """A file's location as metadata: a path locally, a URL on S3."""
    return dg.MetadataValue.url(location) if is_remote(location) \
        else dg.MetadataValue.path(location)


def _file_metadata(store, record: fp.Record) -> dict:
    files = record.files
    if len(files) == 1:
        return {"path": location_value(outputs.file_location(store, record, files[0]["name"])),
                "sha256": files[0]["sha256"]}
    return {"files": len(files),
            "file_table": table([{"file": f["name"], "bytes": f["bytes"], "sha256": f["sha256"]}
                                 for f in files], {"file": str, "bytes": int, "sha256": str})}


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
    Partitions tab shows Passed/Failed per shard), and whether the shard is now current."""
    targets = latest_materializations(context.instance, context.asset_key, list(done),
                                      context.run_id)
    for shard, summary in done.items():
        target = targets.get(shard)
        for name, outcome in summary["checks"].items():
            yield dg.AssetCheckEvaluation(
                asset_key=context.asset_key, check_name=name, passed=outcome["passed"],
                description=outcome["description"], metadata=outcome["metadata"],
                blocking=True, partition=shard, target_materialization_data=target)
        current = summary["current"]
        yield dg.AssetCheckEvaluation(
            asset_key=context.asset_key, check_name=CURRENT_CHECK, passed=current["passed"],
            description=current["description"], metadata=current["metadata"], blocking=False,
            severity=dg.AssetCheckSeverity.WARN, partition=shard,
            target_materialization_data=target)


def latest_materializations(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                            shards: list[str], run_id: str | None = None
                            ) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each of ``shards`` (of run ``run_id``, if given; a shard
    whose latest is another run's has none), as the target of a check evaluation: the check's
    Partitions tab counts only evaluations of the partition's latest materialization, and shows
    the others as missing. Pages of the event log, newest first, never a query per shard."""
    latest: dict[str, Any] = {}
    cursor = None
    while len(latest) < len(set(shards)):
        wanted = sorted(set(shards) - latest.keys())
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=wanted),
            limit=max(100, 2 * len(wanted)), cursor=cursor)
        for record in page.records:
            latest.setdefault(record.partition_key, record)
        if not page.has_more:
            break
        cursor = page.cursor
    return {shard: AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
            for shard, record in latest.items() if run_id is None or record.run_id == run_id}


_COLUMN_TYPES = {str: "string", int: "int", float: "float", bool: "bool"}


def table(rows: list[dict], columns: Mapping[str, type]) -> dg.MetadataValue:
    """Rows as a table the UI renders with typed columns (a cell is text, never Markdown, so
    what a crawl or a model wrote cannot forge a row or a link)."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: row.get(name) for name in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, _COLUMN_TYPES[kind])
                                       for name, kind in columns.items()]))


COUNT_ROWS = 50  # rows of a count table: a shard's metadata stays bounded whatever it holds


def counts_table(counts: Mapping[str, int], key: str = "value") -> dg.MetadataValue:
    """The counts as a table, the largest :data:`COUNT_ROWS` of them by name, the rest summed
    into one ``(N others)`` row."""
    rows = sorted(counts.items(), key=lambda item: (-int(item[1]), str(item[0])))
    shown, rest = sorted(rows[:COUNT_ROWS]), rows[COUNT_ROWS:]
    if rest:
        shown.append((f"({len(rest)} others)", sum(int(v) for _, v in rest)))
    return table([{key: str(k), "count": int(v)} for k, v in shown], {key: str, "count": int})


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
