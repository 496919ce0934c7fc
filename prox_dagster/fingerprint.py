"""Whether a stored shard is what a recomputation would write: the one notion of current/stale.

A stage's code version is its revision plus the settings that shape its rows (:data:`SHAPED_BY`);
an output's fingerprint is that plus the content ids of its inputs. A stage is *current*,
*failed*, *stale* or *missing* against the current inputs and settings, and the same comparison
drives caching, the audit, the schedule, the ``current`` checks and the pre-training set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .quality import Thresholds
from .stages import STAGES

SIDECAR_SUFFIX = ".provenance.json"
FAILED = "failed"  # the folder, under an asset's, of outputs whose blocking checks failed

# Bump a stage's revision when its code writes different rows for the same inputs and settings.
STAGE_REVISIONS = {"raw_shard": "4", "doc_refined_shard": "3", "chunked_shard": "4",
                   "chunk_refined_shard": "3", "clean_shard": "6", "tokenized_shard": "4"}


THRESHOLDS = tuple(Thresholds.model_fields)

# Which setting makes which stage stale (the README's table says the same in words).
SHAPED_BY: dict[str, tuple[str, ...]] = {
    "raw_shard": (),
    "doc_refined_shard": ("refiner",),
    "chunked_shard": ("chunk_tokenizer", "max_chunk_tokens"),
    "chunk_refined_shard": ("refiner",),
    "clean_shard": ("policy", "tokenizer"),
    "tokenized_shard": ("tokenizer", "token_files"),
}
# Which check threshold each stage's checks are judged with.
CHECKED_BY: dict[str, tuple[str, ...]] = {
    "raw_shard": ("max_quarantine_share",),
    "doc_refined_shard": ("min_doc_parse_rate",),
    "chunked_shard": (),
    "chunk_refined_shard": ("min_chunk_parse_rate",),
    "clean_shard": ("min_token_retention", "max_token_retention", "min_kept_share"),
    "tokenized_shard": (),
}


@dataclass(frozen=True)
class StageSettings:
    """What a stage's outputs are compared against: the values of the settings that shape it,
    the thresholds its checks are judged with, and the code version they give."""

    stage: str
    settings: Mapping[str, Any]
    thresholds: Mapping[str, float]
    code_version: str


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


def settings_of(stage: str, values: Mapping[str, Any]) -> StageSettings:
    """``stage``'s settings (``values`` holds at least the names it is shaped and judged by)."""
    return StageSettings(stage, {n: values[n] for n in SHAPED_BY[stage]},
                         {n: values[n] for n in CHECKED_BY[stage]}, code_version(stage, values))


def stage_settings(values: Mapping[str, Any]) -> dict[str, StageSettings]:
    """Every stage's settings (``values``: every setting :data:`SHAPED_BY` names, and the
    :data:`THRESHOLDS`)."""
    return {stage: settings_of(stage, values) for stage in STAGES}


def fingerprint(stage_code_version: str, inputs: Mapping[str, str]) -> str:
    """A stored shard's fingerprint: its stage's code version and its inputs' content ids."""
    return _digest({"code_version": stage_code_version, "inputs": dict(inputs)})[:16]


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def data_id(files: list[dict]) -> str:
    """The content id of an output, as its readers record it among their inputs: the sha256 of
    its one file, or a hash of its files' names and hashes."""
    if len(files) == 1:
        return files[0]["sha256"]
    return _digest(sorted((f["name"], f["sha256"]) for f in files))


@dataclass
class Record:
    """What a stage output's writer recorded (its sidecar), published or failed."""

    stage: str
    shard: str
    kind: str  # "published" or "failed"
    data: dict

    @property
    def fingerprint(self) -> str | None:
        return self.data.get("fingerprint")

    @property
    def files(self) -> list[dict]:
        return self.data.get("files") or []

    @property
    def data_id(self) -> str:
        return data_id(self.files)

    @property
    def judged_with(self) -> dict:
        return self.data.get("judged_with") or {}

    @property
    def failed_checks(self) -> list[str]:
        return sorted(f"{self.stage}:{name}" for name, result in
                      (self.data.get("checks") or {}).items() if not result.get("passed"))

    @property
    def n_checks(self) -> int:
        return len(self.data.get("checks") or {})

    @property
    def extra(self) -> dict:
        return self.data.get("extra") or {}


@dataclass
class Freshness:
    """A stage's stored output against the current inputs and settings."""

    stage: str
    shard: str
    state: str  # current, failed, stale, missing
    reason: str
    fingerprint: str | None = None  # what the current inputs and settings give
    record: Record | None = None  # the output it judges (the newest one when none matches)
    inputs: dict[str, str] | None = None  # the current inputs' content ids
    recheck: bool = False  # the output matches, its checks were judged with other thresholds
    published: Record | None = field(default=None, repr=False)

    @property
    def current(self) -> bool:
        return self.state == "current"

    @property
    def sidecar(self) -> dict | None:
        return self.record.data if self.record else None


def judge_stage(expected: StageSettings, shard: str, published: Record | None,
                failed: Record | None, inputs: dict[str, str] | None, absent: list[str],
                intact: Callable[[Record], bool], with_fingerprint: bool = True) -> Freshness:
    """The freshness of one stage of ``shard``: ``inputs`` are the content ids of its inputs
    (``absent``: those that do not exist; ``inputs`` None: not worked out, which only a stage
    with no output may leave); ``intact(record)`` tells whether every file a record lists is
    still what its writer wrote. ``with_fingerprint=False``: the fingerprint a new output would
    carry is not worked out (an audit of many shards needs only the comparison)."""
    stage = expected.stage
    newest = published or failed
    if absent:
        return Freshness(stage, shard, "missing", f"input {', '.join(absent)} does not exist",
                         record=newest, published=published)
    if newest is None and inputs is None:
        return Freshness(stage, shard, "missing", "never written")
    expected_fp = fingerprint(expected.code_version, inputs) if with_fingerprint else None

    def written_so(record: Record) -> bool:
        # a record's fingerprint is that of the code version and inputs it holds: the same
        # ones match without hashing them again
        data = record.data
        if data.get("code_version") == expected.code_version and data.get("inputs") == inputs:
            return True
        return record.fingerprint == (expected_fp or fingerprint(expected.code_version, inputs))

    for record in (published, failed):
        if record is None or not written_so(record):
            continue
        if not intact(record):
            return Freshness(stage, shard, "missing", "a recorded file is gone or changed",
                             expected_fp, record, inputs, published=published)
        if record.judged_with != dict(expected.thresholds):
            return Freshness(stage, shard, "stale", "checks judged with "
                             + describe_changes(record.judged_with, expected.thresholds),
                             expected_fp, record, inputs, recheck=True, published=published)
        if record.kind == FAILED:
            return Freshness(stage, shard, "failed",
                             f"{', '.join(record.failed_checks) or 'a blocking check'} failed",
                             expected_fp, record, inputs, published=published)
        return Freshness(stage, shard, "current", "inputs and settings unchanged", expected_fp,
                         record, inputs, published=published)
    if newest is None:
        return Freshness(stage, shard, "missing", "never written", expected_fp, None, inputs)
    return Freshness(stage, shard, "stale", why_stale(newest, expected, inputs), expected_fp,
                     newest, inputs, published=published)


def why_stale(record: Record, expected: StageSettings, inputs: dict[str, str]) -> str:
    """Which settings changed, with their old and new values, and which inputs changed."""
    reasons = []
    recorded = record.data.get("settings")
    if record.data.get("code_version") != expected.code_version:
        if isinstance(recorded, dict):
            reasons.append(describe_changes(recorded, expected.settings)
                           or f"{record.stage} code revision changed")
        else:  # written before settings were recorded by value
            reasons.append(f"settings changed ({record.data.get('code_version')} -> "
                           f"{expected.code_version})")
    before = record.data.get("inputs") or {}
    changed = sorted(name for name in inputs if before.get(name) != inputs[name])
    if changed:
        reasons.append(f"input {', '.join(changed)} changed")
    return "; ".join(reasons) or "written by an older format"


def describe_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``max_chunk_tokens 1500 → 800, policy.min_words 10 → 30``: the values that differ,
    nested settings named by their path."""
    changes: list[str] = []

    def walk(prefix: str, old: Any, new: Any) -> None:
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            for name in sorted(set(old) | set(new)):
                walk(f"{prefix}.{name}" if prefix else str(name), old.get(name, "(none)"),
                     new.get(name, "(none)"))
        elif old != new:
            changes.append(f"{prefix} {_shown(old)} → {_shown(new)}")

    walk("", dict(before), dict(after))
    return ", ".join(changes)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def shard_status(stages: Mapping[str, Freshness]) -> tuple[str, str]:
    """``(status, reason)`` of a shard from its stages in graph order: the state of the first
    stage that is not current (``stale``, ``missing`` or ``failed``: a failed stage's output
    is not published, so nothing after it runs until its inputs or settings change), else
    ``current``."""
    for stage, record in stages.items():
        if not record.current:
            if record.state == "failed":
                return "failed", record.reason
            return record.state, f"{stage}: {record.reason}"
    return "current", ""
