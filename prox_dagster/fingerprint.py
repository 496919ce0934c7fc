"""Whether a stored shard is what a recomputation would write: the one notion of current/stale.

Every shard stage has a **code version**: its code revision plus every setting that shapes its
rows or its check results (``SHAPED_BY``, the README's staleness table). A stored shard's
**fingerprint** is that code version plus the content id of each input file. The writer records
both in a sidecar (``{asset}/{shard}.provenance.json``) after the shard's files; a shard is
*current* when the sidecar's fingerprint equals the one its current inputs and settings give,
*stale* otherwise (with the reason: which settings or which input changed), *missing* when it has
no sidecar or one of its files is gone.

The same code versions are the Dagster assets' code versions, and the same comparison drives
caching (a current shard is not recomputed), the lineage audit and the refine schedule, so the
UI, the audit and automation cannot disagree about what is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .quality import Thresholds
from .store import ShardStore, content_id, exists

SIDECAR_SUFFIX = ".provenance.json"
RAW_INPUT = "raw"  # the crawl file a raw shard is read from

# Bump a stage's revision when its code writes different rows for the same inputs and settings.
STAGE_REVISIONS = {"raw_shard": "3", "doc_refined_shard": "2", "chunked_shard": "3",
                   "chunk_refined_shard": "2", "clean_shard": "4", "tokenized_shard": "2"}

STAGE_INPUTS = {"raw_shard": (RAW_INPUT,), "doc_refined_shard": ("raw_shard",),
                "chunked_shard": ("doc_refined_shard",),
                "chunk_refined_shard": ("chunked_shard",),
                "clean_shard": ("doc_refined_shard", "chunk_refined_shard"),
                "tokenized_shard": ("clean_shard",)}
STAGES = list(STAGE_INPUTS)

# Every setting that shapes some stage, as versions and hashes rather than objects
SETTINGS = {
    "refiner": "refiner version (backend, model weights, prompts, decoding, rules)",
    "policy": "program execution policy version",
    "chunk_tokenizer": "hash of the refiner's tokenizer, which counts chunk budgets",
    "max_chunk_tokens": "chunk budget in tokens",
    "tokenizer": "hash of the pretraining tokenizer (token files, tokens in/out)",
    "token_files": "token file format, dtype and chunking",
    **{name: "check threshold" for name in Thresholds.__dataclass_fields__},
}

# Which setting makes which stage stale (the README's table says the same in words).
SHAPED_BY: dict[str, tuple[str, ...]] = {
    "raw_shard": ("max_quarantine_share",),
    "doc_refined_shard": ("refiner", "policy", "min_doc_parse_rate"),
    "chunked_shard": ("chunk_tokenizer", "max_chunk_tokens"),
    "chunk_refined_shard": ("refiner", "min_chunk_parse_rate"),
    "clean_shard": ("policy", "tokenizer", "min_token_retention", "max_token_retention",
                    "min_kept_share"),
    "tokenized_shard": ("tokenizer", "token_files"),
}


def code_version(stage: str, values: Mapping[str, Any]) -> str:
    """``{stage}.{revision}@{hash of the settings that shape it}`` (``values`` holds at least
    those settings); the refiner stages lead with the refiner version so it reads at a glance
    in the UI."""
    missing = [name for name in SHAPED_BY[stage] if name not in values]
    if missing:
        raise KeyError(f"the code version of {stage} needs the settings {missing}")
    shaping = {name: values[name] for name in SHAPED_BY[stage]}
    digest = _digest({"stage": stage, "revision": STAGE_REVISIONS[stage], **shaping})[:12]
    head = f"{values['refiner']}|" if "refiner" in shaping else ""
    return f"{head}{stage}.{STAGE_REVISIONS[stage]}@{digest}"


def code_versions(values: Mapping[str, Any]) -> dict[str, str]:
    """Every stage's code version (``values``: every name in ``SETTINGS``)."""
    return {stage: code_version(stage, values) for stage in STAGES}


def fingerprint(stage_code_version: str, inputs: dict[str, str]) -> str:
    """A stored shard's fingerprint: its stage's code version and its inputs' content ids."""
    return _digest({"code_version": stage_code_version, "inputs": inputs})[:16]


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_content_ids: dict[tuple, str] = {}


def input_id(location: str) -> str:
    """The content id of an input file, remembered per (location, size, modification time) so
    the audit and a run's stages hash each local file once."""
    if "://" not in location:
        stat = os.stat(location)
        key = (location, stat.st_size, stat.st_mtime_ns)
        if key not in _content_ids:
            _content_ids[key] = content_id(location)
        return _content_ids[key]
    return content_id(location)


def input_locations(store: ShardStore, stage: str, shard: str,
                    raw_location: str | None = None) -> dict[str, str]:
    """Where each input of ``stage`` for ``shard`` lives (``raw_location``: the crawl file)."""
    return {name: raw_location if name == RAW_INPUT else store.path(name, shard)
            for name in STAGE_INPUTS[stage] if name != RAW_INPUT or raw_location}


def read_sidecar(store: ShardStore, stage: str, shard: str) -> dict | None:
    """What the shard's writer recorded, or None (never written, or unreadable: either way the
    shard is recomputed)."""
    location = store.path(stage, shard, SIDECAR_SUFFIX)
    try:
        return json.loads(store.read_text(location)) if exists(location) else None
    except (OSError, ValueError):
        return None


def write_sidecar(store: ShardStore, stage: str, shard: str, record: dict) -> str:
    """Write the sidecar after the shard's files. Files the previous sidecar listed and this one
    does not (another token format, fewer chunks) are removed."""
    previous = read_sidecar(store, stage, shard) or {}
    location = store.write_text(json.dumps(record, indent=1), stage, f"{shard}{SIDECAR_SUFFIX}")
    names = {f["name"] for f in record.get("files", [])}
    for old in previous.get("files", []):
        if old["name"] not in names:
            store.remove(store.location(stage, old["name"]))
    return location


@dataclass
class Freshness:
    """A stored shard against the current inputs and settings."""

    stage: str
    shard: str
    state: str  # current, stale, missing
    reason: str
    fingerprint: str | None = None  # what the current inputs and settings give
    sidecar: dict | None = None
    inputs: dict[str, str] | None = None  # the current inputs' content ids

    @property
    def current(self) -> bool:
        return self.state == "current"


def freshness(store: ShardStore, stage: str, shard: str, stage_code_version: str,
              raw_location: str | None = None) -> Freshness:
    """Compare the stored ``stage`` output of ``shard`` with what its current inputs and
    ``stage_code_version`` would give."""
    locations = input_locations(store, stage, shard, raw_location)
    absent = [name for name, loc in locations.items() if not exists(loc)]
    sidecar = read_sidecar(store, stage, shard)
    if absent:
        return Freshness(stage, shard, "missing",
                         f"input {', '.join(absent)} does not exist", None, sidecar)
    inputs = {name: input_id(loc) for name, loc in locations.items()}
    expected = fingerprint(stage_code_version, inputs)
    if sidecar is None:
        return Freshness(stage, shard, "missing", "never written", expected, None, inputs)
    if not all(exists(store.location(stage, f["name"])) for f in sidecar.get("files", [])):
        return Freshness(stage, shard, "missing", "a recorded file is gone", expected, sidecar,
                         inputs)
    if sidecar.get("fingerprint") == expected:
        return Freshness(stage, shard, "current", "inputs and settings unchanged", expected,
                         sidecar, inputs)
    return Freshness(stage, shard, "stale", _why_stale(sidecar, stage_code_version, inputs),
                     expected, sidecar, inputs)


def _why_stale(sidecar: dict, stage_code_version: str, inputs: dict[str, str]) -> str:
    reasons = []
    if sidecar.get("code_version") != stage_code_version:
        reasons.append(f"settings changed ({sidecar.get('code_version')} -> "
                       f"{stage_code_version})")
    recorded = sidecar.get("inputs") or {}
    changed = sorted(name for name in inputs if recorded.get(name) != inputs[name])
    if changed:
        reasons.append(f"input {', '.join(changed)} changed")
    return "; ".join(reasons) or "written by an older format"


def shard_freshness(store: ShardStore, shard: str, versions: dict[str, str],
                    raw_location: str | None) -> dict[str, Freshness]:
    """Every stage of ``shard``, in graph order (``raw_location`` None: the crawl file is
    gone, so the raw shard cannot be current)."""
    result = {}
    for stage in STAGES:
        if stage == "raw_shard" and raw_location is None:
            result[stage] = Freshness(stage, shard, "missing", "its crawl file is gone", None,
                                      read_sidecar(store, stage, shard))
        else:
            result[stage] = freshness(store, stage, shard, versions[stage], raw_location)
    return result


def stale_upstream(store: ShardStore, stage: str, shard: str, versions: dict[str, str],
                   raw_location: str | None = None) -> list[Freshness]:
    """Ancestors of ``stage`` that are not current: computing ``stage`` from them would mix
    outputs of different inputs or settings (e.g. chunk programs written for an earlier doc
    decision)."""
    seen: dict[str, Freshness] = {}
    pending = [name for name in STAGE_INPUTS[stage] if name != RAW_INPUT]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen[name] = freshness(store, name, shard, versions[name], raw_location)
        pending.extend(n for n in STAGE_INPUTS[name] if n != RAW_INPUT)
    return [f for name, f in seen.items() if not f.current
            and (name != "raw_shard" or raw_location is not None)]


def failed_checks(record: Freshness) -> list[str]:
    """The checks that failed on the stored output (from its sidecar)."""
    checks = (record.sidecar or {}).get("checks") or {}
    return sorted(f"{record.stage}:{name}" for name, result in checks.items()
                  if not result.get("passed"))


def shard_status(stages: dict[str, Freshness]) -> tuple[str, str]:
    """``(status, reason)`` of a shard from its stages in graph order: ``stale`` or ``missing``
    at the first stage that is, ``failed`` at the first current stage whose blocking check
    failed (nothing after it runs until its inputs or settings change), else ``current``."""
    for stage, record in stages.items():
        if not record.current:
            return record.state, f"{stage}: {record.reason}"
        failed = failed_checks(record)
        if failed:
            return "failed", f"{', '.join(failed)} failed"
    return "current", ""
