"""The composition root: the only engine module that imports Dagster, assets and resources.

Configuration comes from the environment (``prox_dagster.environment``), so local and production
runs differ by settings only. The refiner's version is the code version of the refiner assets, so
it is computed here, at load time, without building a model or asking a hub: a hub model's commit
is what this machine remembers (``prox_dagster.hub``) until a step resolves it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import dagster as dg

from prox_dagster.assets import ASSET_CHECKS, JOBS, build_assets, build_automation
from prox_dagster.assets.common import REPORTED_BY
from prox_dagster import environment, fingerprint
from prox_dagster.lineage import filter_audit_rows
from prox_dagster.store import file_version, is_remote, join, normalize
from prox_dagster.sample import HELDOUT_SET, LABELLED_SET
from prox_dagster.resources import (CheckThresholds, LabelledSets, ProgramPolicy, RawSource,
                                    RefinerResource, ShardStorage, TokenizerResource)
from prox_dagster.resources.settings import settings_values


TOKENIZER_KEY = "pretraining_tokenizer"  # in the definitions' metadata: what it was built with


def build_definitions(*, data_dir: str | os.PathLike | None = None,
                      raw_dir: str | os.PathLike | None = None,
                      tokenizer: str | None = None,
                      refiner: RefinerResource | None = None,
                      policy: ProgramPolicy | None = None,
                      checks: CheckThresholds | None = None,
                      labelled_sets: LabelledSets | None = None,
                      shards_per_run: int | None = None) -> dg.Definitions:
    data = normalize(data_dir or environment.value("PROX_DATA_DIR"))
    raw = normalize(raw_dir or environment.value("PROX_RAW_DIR") or join(data, "raw"))
    refiner = refiner or RefinerResource.from_env()
    policy = policy or ProgramPolicy()
    tokenizer = tokenizer or environment.value("PROX_TOKENIZER")
    resources = {
        "storage": ShardStorage(base=data),
        "raw_source": RawSource(path=raw),
        # the token-file settings (format, dtype, litgpt chunk size) stay open to run config
        "tokenizer": TokenizerResource.configure_at_launch(name_or_path=tokenizer),
        "refiner": refiner,
        "policy": policy,
        "checks": checks or CheckThresholds(),
        "labelled_sets": labelled_sets or LabelledSets.from_env(
            [join(data, "labels", LABELLED_SET)] if not is_remote(data) else [],
            str(environment.cache_dir() / "models") if is_remote(data) else join(data, "models"),
            [join(data, "labels", HELDOUT_SET)] if not is_remote(data) else []),
    }
    per_run = shards_per_run or environment.integer("PROX_SHARDS_PER_RUN")
    live = refiner.resolved()  # its EnvVar values read, as a run will see them
    loaded = TokenizerResource(name_or_path=tokenizer)  # the token-file settings as defaulted
    expected = expected_settings(resources, loaded, live, resolve=False)
    with warnings.catch_warnings():
        # Batched backfills (BackfillPolicy) are beta and per-partition checks preview in Dagster
        # 1.13; the graph is built on both, so these two load-time notices only are silenced
        warnings.filterwarnings("ignore", category=dg.BetaWarning,
                                message=".*backfill_policy.*")
        warnings.filterwarnings("ignore", category=dg.PreviewWarning,
                                message=".*partitions_def on an AssetCheckSpec.*")
        assets = build_assets(expected, loaded.token_files()["format"],
                              live.op_tags(), per_run, gpu=live.uses_gpu,
                              evaluation_version=evaluation_version(resources, live, expected))
    return dg.Definitions(
        assets=assets,
        asset_checks=ASSET_CHECKS,
        executor=executor(environment.value("PROX_EXECUTOR")),
        jobs=JOBS,
        resources=resources,
        metadata={TOKENIZER_KEY: tokenizer},
        **build_automation(per_run),
    )


EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}


def executor(name: str) -> dg.ExecutorDefinition:
    """How every job's steps run (``PROX_EXECUTOR``): ``in_process`` (default: one process per
    run, so a step costs no process start and the refiner loads once per run for both refiner
    steps), ``multiprocess`` (a process per step) or ``k8s`` (dagster-k8s's
    ``k8s_job_executor``: a pod per step, the refiner steps' GPU requests, node selector and
    tolerations from their ``dagster-k8s/config`` tags)."""
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ValueError("PROX_EXECUTOR=k8s needs dagster-k8s: pip install "
                             "'prox-dagster[deploy]'") from exc
        return k8s_job_executor
    if name not in EXECUTORS:
        raise ValueError(f"PROX_EXECUTOR={name!r} is not one of {sorted(EXECUTORS) + ['k8s']}")
    return EXECUTORS[name]


def loaded_tokenizer(definitions: dg.Definitions) -> TokenizerResource:
    """The pretraining tokenizer these definitions were built with (its resource is left open
    to run config for the token-file settings, which the stages before tokenization do not
    use)."""
    return TokenizerResource(name_or_path=definitions.metadata[TOKENIZER_KEY].value)


def expected_settings(resources: dict, tokenizer: TokenizerResource,
                      refiner: RefinerResource | None = None, *,
                      resolve: bool = True) -> dict[str, fingerprint.StageSettings]:
    """Every shard stage's settings from these resources: the code versions the assets
    declare, and what the audit, the checks and automation compare stored shards with.
    ``refiner``: the refiner resource with its environment read; ``resolve=False`` (loading
    the code location) asks no hub and loads no model or tokenizer."""
    return fingerprint.stage_settings(settings_values(
        refiner=refiner or resources["refiner"].resolved(), policy=resources["policy"],
        tokenizer=tokenizer, checks=resources["checks"],
        resolve=resolve))


def evaluation_version(resources: dict, refiner: RefinerResource,
                       expected: dict[str, fingerprint.StageSettings]) -> str:
    """The code version of ``refiner_evaluation``: everything its numbers depend on (the
    refiner, its tokenizer and chunk budget, the execution policy and the labelled sets'
    files, by size and modification time)."""
    sets = []
    for path in resources["labelled_sets"].evaluation:
        target = Path(path) / "docs.jsonl" if Path(path).is_dir() else Path(path)
        try:
            sets.append(f"{path}:{file_version(str(target))}")
        except OSError:
            sets.append(f"{path}:absent")
    digest = fingerprint.fingerprint("refiner_evaluation", {
        "chunking": json.dumps(dict(expected["chunked_shard"].settings), sort_keys=True),
        "policy": json.dumps(dict(expected["clean_shard"].settings["policy"]), sort_keys=True),
        "sets": json.dumps(sets)})
    return f"{expected['doc_refined_shard'].settings['refiner']}|evaluation@{digest[:12]}"


@dg.definitions
def defs() -> dg.Definitions:
    """The code location ``dagster dev``, ``dagster asset materialize -m
    prox_dagster.definitions`` and the run workers load, from the environment; built when
    Dagster asks for it, not on import (the CLI builds its own)."""
    return build_definitions()


# Running the graph from Python (the CLI and tests): always through a real Dagster instance.

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def current_instance() -> dg.DagsterInstance:
    """The instance in ``$DAGSTER_HOME``."""
    return dg.DagsterInstance.get()


def register_new_shards(definitions: dg.Definitions, instance: dg.DagsterInstance) -> list[str]:
    """Evaluate the raw-shard sensor once: record its observations of the crawl files and add
    the partitions it requests (its run requests are left to the caller; without a cursor, the
    registered partitions alone say what is new)."""
    sensor = definitions.resolve_sensor_def("raw_shard_sensor")
    with dg.build_sensor_context(instance=instance, resources=definitions.resources) as context:
        result = sensor(context)
    if not isinstance(result, dg.SensorResult):
        return []
    for event in result.asset_events or []:  # the crawl files' content versions
        instance.report_runless_asset_event(event)
    new: list[str] = []
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        new.extend(request.partition_keys)
    return new


def run_config(quiet: bool = True, token_files: dict | None = None) -> dict:
    """Run config: console logs at WARNING when ``quiet``; ``token_files`` sets the tokenizer
    resource's file settings for this run (e.g. ``{"output_format": "megatron"}``)."""
    config: dict = dict(QUIET) if quiet else {}
    if token_files:
        config["resources"] = {"tokenizer": {"config": token_files}}
    return config


def materialize_shard(definitions: dg.Definitions, instance: dg.DagsterInstance, shard: str,
                      quiet: bool = True,
                      token_files: dict | None = None) -> dg.ExecuteInProcessResult:
    """Run every partitioned stage of one shard (``refine_shard_job``)."""
    job = definitions.resolve_job_def("refine_shard_job")
    return job.execute_in_process(partition_key=shard, instance=instance,
                                  run_config=run_config(quiet, token_files),
                                  raise_on_error=False)


def materialize_shards(definitions: dg.Definitions, instance: dg.DagsterInstance, first: str,
                       last: str, quiet: bool = True, tags: dict | None = None,
                       token_files: dict | None = None) -> dg.ExecuteInProcessResult:
    """One run of ``refine_shard_job`` over the partition range ``first``..``last`` (as a
    backfill batch runs it): one step per stage, the refiner built once."""
    job = definitions.resolve_job_def("refine_shard_job")
    return job.execute_in_process(
        instance=instance, run_config=run_config(quiet, token_files), raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first,
              "dagster/asset_partition_range_end": last, **(tags or {})})


def materialize_pretraining_set(definitions: dg.Definitions, instance: dg.DagsterInstance,
                                quiet: bool = True, token_files: dict | None = None,
                                keep_last_good: bool = False, drop_duplicates: bool = False,
                                count_duplicates: bool = True) -> dg.ExecuteInProcessResult:
    """``pretraining_set_job`` (the manifest and its check); ``keep_last_good``: serve shards
    that are not current from their last published token files, marked; ``drop_duplicates``:
    leave out the documents that are copies of an earlier one; ``count_duplicates=False``:
    do not count them (see ``PretrainingSetConfig``)."""
    job = definitions.resolve_job_def("pretraining_set_job")
    config = run_config(quiet, token_files)
    options = {name: on for name, on, default in (
        ("keep_last_good", keep_last_good, False), ("drop_duplicates", drop_duplicates, False),
        ("count_duplicates", count_duplicates, True)) if on != default}
    if options:
        config["ops"] = {"pretraining_set": {"config": options}}
    return job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)


def latest_metadata(instance: dg.DagsterInstance, asset: str,
                    partition: str | None = None) -> dict:
    """Metadata values of the latest materialization of ``asset`` (and partition). A cached
    shard's materialization holds a few values and the run that reported it in full
    (``reported_by_run``): its values come first, under the cached one's."""
    key = dg.AssetKey(asset)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key,
                              asset_partitions=[partition] if partition else None), limit=1)
    if not records.records:
        return {}
    latest = _values(records.records[0].asset_materialization.metadata)
    reported_by = latest.get(REPORTED_BY)
    if not (partition and reported_by and reported_by != records.records[0].run_id):
        return latest
    for record in instance.get_records_for_run(
            reported_by, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        materialization = record.event_log_entry.asset_materialization
        if materialization.asset_key == key and materialization.partition == partition:
            return {**_values(materialization.metadata), **latest}
    return latest  # that run's events were deleted


def _values(metadata) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def lineage_report(definitions: dg.Definitions, instance: dg.DagsterInstance, *,
                   refiner_version: str | None = None, model: str | None = None,
                   status: str | None = None, verify: bool = False) -> list[dict]:
    """The lineage audit (see ``assets/audit.py``): one row per shard, filtered; ``verify``:
    every shard judged again, every file checked."""
    from prox_dagster.assets.audit import audit_rows

    resources = definitions.resources
    rows = audit_rows(instance, resources["storage"], resources["raw_source"],
                      expected_settings(resources, loaded_tokenizer(definitions)),
                      verify=verify)
    return filter_audit_rows(rows, refiner_version=refiner_version, model=model, status=status)
