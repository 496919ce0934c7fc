"""Every shard's state, judged at the cost of what changed: what the audit, the refine schedule,
the ``current`` checks and the pre-training set read.

Sidecars are listed (names and versions, never contents) once per evaluation; a shard whose
sidecar, crawl-file and settings versions are unchanged keeps its judged row, the others are
judged by ``fingerprint.judge_stage`` within a read budget. The rows are a cache in
``{store}/.catalog/shards.parquet``, rebuilt when missing or unreadable.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import polars as pl

from .fingerprint import (FAILED, SIDECAR_SUFFIX, Freshness, Record, StageSettings, judge_stage)
from .lineage import AUDIT_COLUMNS, audit_row
from .outputs import (PUBLISHED, RawFile, folder, parse_record, raw_content_id,
                      unreadable_sidecar)
from .stages import RAW_INPUT, STAGE_INPUTS, STAGES
from .store import RawEntry, ShardStore, file_version, list_files, sha256

CATALOG_VERSION = 1
# per stage: its state ("{state}|{reason}"), and what its `current` check was last told of it
STATE_COLUMNS = [f"state:{stage}" for stage in STAGES]
SAID_COLUMNS = [f"said:{stage}" for stage in STAGES]
COLUMNS = ["key", *[c for c in AUDIT_COLUMNS if c != "in_flight_run"],
           *STATE_COLUMNS, *SAID_COLUMNS]
INTS = ("checks_passed", "checks_failed")
SCHEMA = {name: (pl.Int64 if name in INTS else pl.String) for name in COLUMNS}
ROW_SCHEMA = {"shard": pl.String, **SCHEMA}  # a catalog row's columns, in order


# sidecars read at once: on S3 each read waits on the network; on a local disk more threads
# fight over the GIL more than they overlap reads (the first audit of 100k shards on 2 cores,
# page cache warm: 1 thread 24.6 s, 2 threads 24.3 s, 4 threads 29 s; page cache dropped: 1
# thread 75 s, 2 and 4 threads 58 s, 8 threads 66 s)
LOCAL_READERS, REMOTE_READERS = 2, 16
BATCH_SHARDS = 512  # shards whose sidecars are read together


class ReadBudget:
    """File reads (and hashes) an evaluation may spend judging shards, and the time by which it
    starts no more of them (``time.perf_counter``); None: no bound."""

    def __init__(self, limit: int | None):
        self.limit, self.spent = limit, 0
        self.reserved = 0  # reads of the batches started
        self.deadline: float | None = None

    def spend(self, n: int = 1) -> None:
        self.spent += n

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit


@dataclass
class Evaluation:
    """One evaluation of the catalog: a row per judged shard (``rows``, in the order asked,
    audit columns without the run in flight, plus each stage's state), the shards asked (in
    partition order), the shards left for a later evaluation, the stages whose ``current``
    state changed since it was last known, and what it cost."""

    rows: pl.DataFrame
    shards: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    transitions: list[tuple[str, str, str, str]] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def stage_states(self, row: Mapping) -> dict[str, tuple[str, str]]:
        return {stage: tuple(row[f"state:{stage}"].split("|", 1)) for stage in STAGES}


def settings_key(expected: Mapping[str, StageSettings]) -> str:
    return hashlib.sha256(json.dumps(
        {stage: [s.code_version, dict(s.thresholds)] for stage, s in expected.items()},
        sort_keys=True).encode()).hexdigest()[:16]


class Catalog:
    """The catalog of one shard store (see the module docstring)."""

    def __init__(self, store: ShardStore, warn: Callable[[str], None] | None = None):
        self.store = store
        self.warn = warn or (lambda message: None)
        self.location = store.location(".catalog", "shards.parquet")

    def load(self) -> pl.DataFrame:
        try:
            with self.store.open(self.location) as f:
                frame = pl.read_parquet(f)
        except FileNotFoundError:
            return pl.DataFrame(schema=ROW_SCHEMA)
        except Exception as exc:  # a cache: never a reason to fail an evaluation
            self.warn(f"the shard catalog {self.location} cannot be read ({type(exc).__name__}:"
                      f" {exc}); every shard is judged again from its sidecars")
            return pl.DataFrame(schema=ROW_SCHEMA)
        if frame.schema != pl.Schema(ROW_SCHEMA) or \
                frame.height and frame["key"][0].split(":", 1)[0] != str(CATALOG_VERSION):
            self.warn(f"the shard catalog {self.location} is of another format; every shard is "
                      "judged again from its sidecars")
            return pl.DataFrame(schema=ROW_SCHEMA)
        return frame

    def told(self, transitions: list[tuple[str, str, str, str]]) -> None:
        """Record that these stages' ``current`` checks were told their state."""
        if not transitions:
            return
        frame = self.load()
        updates = pl.DataFrame(
            [(shard, stage, f"{state}|{reason}") for shard, stage, state, reason in transitions],
            schema={"shard": pl.String, "stage": pl.String, "said": pl.String}, orient="row")
        for stage in STAGES:
            said = updates.filter(pl.col("stage") == stage).select(
                "shard", pl.col("said").alias("told"))
            if said.height:
                frame = frame.join(said, on="shard", how="left").with_columns(
                    pl.coalesce("told", f"said:{stage}").alias(f"said:{stage}")).drop("told")
        self.save(frame)

    def save(self, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd")
        self.store.write_bytes(buffer.getvalue(), ".catalog", "shards.parquet")

    def evaluate(self, shards: list[str], expected: Mapping[str, StageSettings],
                 raw: Mapping[str, RawEntry], problems: Mapping[str, str] | None = None, *,
                 read_budget: int | None = None, seconds: float | None = None,
                 verify: bool = False, save: bool = True) -> Evaluation:
        """Judge ``shards`` (the partitions, in order) against ``expected``; ``raw``: the crawl
        files by shard, from one listing; ``problems``: shards an operator must fix (two crawl
        files for one key), with why. ``read_budget`` and ``seconds``: the file reads it may
        spend judging, and the seconds of judging after which it starts no more batches (at
        least one is judged); the shards beyond them are deferred to the next evaluation. ``verify``: judge every shard again, checking each
        file its sidecars list (a file changed behind its writer's back leaves its sidecar's
        version as it was, so only this finds it)."""
        started = time.perf_counter()
        problems = problems or {}
        sidecars = {(stage, kind): list_files(folder(self.store, stage, kind), SIDECAR_SUFFIX)
                    for stage in STAGES for kind in (PUBLISHED, FAILED)}
        listed_s = time.perf_counter() - started
        present = _present(sidecars)
        keys = _keys(shards, expected, sidecars, raw, problems)
        cached = self.load()
        compared = keys.join(cached.select("shard", pl.col("key").alias("old")), on="shard",
                             how="left", maintain_order="left")
        same = pl.lit(False) if verify else pl.col("key") == pl.col("old")
        keep = compared.filter(same)["shard"].to_list()
        judge = compared.filter(pl.col("old").is_null() | ~same)
        budget = ReadBudget(read_budget)
        judged: list[tuple] = []
        deferred: list[str] = []
        reader = _Reader(self.store, budget, self.warn, check_files=verify,
                         places={place: folder(self.store, *place) for place in sidecars})
        previous = {row["shard"]: row for row in cached.join(
            judge.select("shard"), on="shard").iter_rows(named=True)}
        # the rows judged here are all kept to the end: the cyclic collector, run again and
        # again as they pile up, would cost more than the judging
        collecting = gc.isenabled()
        gc.disable()
        try:
            pending = judge.select("shard", "key").rows()
            position = 0

            def next_batch() -> list[tuple[str, str]]:
                # shards whose sidecars fit what is left of the budget
                nonlocal position
                batch, reads = [], 0
                if position and budget.deadline is not None and \
                        time.perf_counter() > budget.deadline:
                    return batch  # (the first batch is always judged)
                while position < len(pending) and len(batch) < BATCH_SHARDS and (
                        budget.limit is None or reads + budget.reserved < budget.limit):
                    need = len(present.get(pending[position][0], ()))
                    if batch and budget.limit is not None and \
                            reads + need + budget.reserved > budget.limit:
                        break
                    batch.append(pending[position])
                    position += 1
                    reads += need
                budget.reserved += reads
                return batch

            if seconds is not None:
                budget.deadline = time.perf_counter() + seconds  # seconds of judging
            readers = REMOTE_READERS if self.store.remote else LOCAL_READERS
            with ThreadPoolExecutor(readers) as pool:
                # a read waits on the disk or the network far longer than it computes: the
                # next batch's sidecars are read while this batch is judged
                batch = next_batch()
                reading = reader.prefetch(pool, batch, present)
                while batch:
                    fetched = reading()
                    following = next_batch()
                    reading = reader.prefetch(pool, following, present)
                    reader.fetched = fetched
                    for shard, key in batch:
                        judged.append(_judged_row(shard, key, present, expected,
                                                  raw.get(shard), problems.get(shard),
                                                  previous.get(shard), reader))
                    batch = following
            deferred.extend(shard for shard, _ in pending[position:])
        finally:
            if collecting:
                gc.enable()
        fresh = pl.DataFrame(judged, schema=ROW_SCHEMA, orient="row") \
            if judged else pl.DataFrame(schema=ROW_SCHEMA)
        kept = cached.join(pl.DataFrame({"shard": keep}, schema={"shard": pl.String}),
                           on="shard")
        merged = pl.concat([kept, fresh])
        if save and (judged or cached.height != merged.height):
            self.save(merged)
        later = set(deferred)
        order = pl.DataFrame({"shard": [s for s in shards if s not in later]},
                             schema={"shard": pl.String})
        rows = order.join(merged, on="shard", how="left", maintain_order="left")
        return Evaluation(rows, shards, deferred, _transitions(rows), {
            "shards": len(shards), "reused": len(keep), "judged": len(judged),
            "deferred": len(deferred), "file_reads": budget.spent,
            "listing_s": round(listed_s, 3),
            "seconds": round(time.perf_counter() - started, 3)})


def _present(sidecars: dict[tuple[str, str], dict]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each shard's listed sidecars, as ``(stage, kind)`` places."""
    found: dict[str, list] = {}
    for place, listing in sidecars.items():
        for name in listing:
            found.setdefault(name[:-len(SIDECAR_SUFFIX)], []).append(place)
    return {shard: tuple(places) for shard, places in found.items()}


def _judged_row(shard: str, key: str, present: dict, expected: Mapping[str, StageSettings],
                raw: RawEntry | None, problem: str | None, old: dict | None,
                reader: "_Reader") -> tuple:
    """One shard judged from its sidecars: its catalog row, in ``COLUMNS`` order."""
    stages = reader.shard(shard, expected, raw, set(present.get(shard, ())))
    row = audit_row(shard, stages, problem)
    row["key"] = key
    for position, (stage, freshness) in enumerate(stages.items()):
        row[f"state:{stage}"] = f"{freshness.state}|{freshness.reason}"
        # a stage written since it was last judged was last told `current` by the step that
        # wrote it
        rewritten = old is None or _part(old["key"], position) != _part(key, position)
        row[f"said:{stage}"] = ("current|" if freshness.record else "") if rewritten \
            else old[f"said:{stage}"]
    return tuple(row[column] for column in ROW_SCHEMA)


def _keys(shards: list[str], expected: Mapping[str, StageSettings], sidecars: dict,
          raw: Mapping[str, RawEntry], problems: Mapping[str, str]) -> pl.DataFrame:
    """Each shard's key, from the listings alone: the settings, the versions of its sidecars
    (rewritten last whenever an output is: a new one has a new version) and of its crawl
    file, and any problem with it; ``_part(key, i)`` is stage ``i``'s sidecars' part."""
    frame = pl.DataFrame({"shard": shards}, schema={"shard": pl.String})
    parts = []
    for stage in STAGES:
        for kind in (PUBLISHED, FAILED):
            listing = sidecars[stage, kind]
            column = f"{stage}/{kind}"
            versions = pl.DataFrame({"shard": [name[:-len(SIDECAR_SUFFIX)] for name in listing],
                                     column: list(listing.values())},
                                    schema={"shard": pl.String, column: pl.String})
            frame = frame.join(versions, on="shard", how="left", maintain_order="left")
            parts.append(pl.col(column).fill_null("-"))
    sources = pl.DataFrame({"shard": list(raw), "raw": [entry.version for entry in raw.values()]},
                           schema={"shard": pl.String, "raw": pl.String})
    frame = frame.join(sources, on="shard", how="left", maintain_order="left")
    problem = pl.DataFrame({"shard": list(problems), "problem": list(problems.values())},
                           schema={"shard": pl.String, "problem": pl.String})
    frame = frame.join(problem, on="shard", how="left", maintain_order="left")
    stages = [pl.concat_str(parts[2 * i:2 * i + 2], separator="+") for i in range(len(STAGES))]
    return frame.select("shard", pl.concat_str([
        pl.lit(f"{CATALOG_VERSION}:{settings_key(expected)}"), *stages,
        pl.col("raw").fill_null("-"), pl.col("problem").fill_null("")],
        separator=KEY_SEPARATOR).alias("key"))


KEY_SEPARATOR = "|"


def _part(key: str, stage_position: int) -> str:
    return key.split(KEY_SEPARATOR)[1 + stage_position]


def _transitions(rows: pl.DataFrame) -> list[tuple[str, str, str, str]]:
    """``(shard, stage, state, reason)`` of the stages whose ``current`` check should say
    something new: stale where it was last told otherwise, or current again where it was last
    told stale."""
    changes = []
    for stage in STAGES:
        state, said = pl.col(f"state:{stage}"), pl.col(f"said:{stage}")
        told_stale = said.str.starts_with("stale|")
        new = rows.filter((state != said) & (state.str.starts_with("stale|")
                                             | (state.str.starts_with("current|")
                                                & told_stale)))
        for shard, value in new.select("shard", f"state:{stage}").iter_rows():
            now, _, reason = value.partition("|")
            changes.append((shard, stage, now, reason))
    return changes


class _Reader:
    """Judges one shard at a time from its sidecars, spending the budget on every read."""

    def __init__(self, store: ShardStore, budget: ReadBudget, warn: Callable[[str], None],
                 check_files: bool, places: dict[tuple[str, str], str]):
        self.store, self.budget, self.warn = store, budget, warn
        self.check_files = check_files
        self.places = places  # each (stage, kind)'s folder
        self.fetched: dict[str, bytes | None] = {}

    def prefetch(self, pool: ThreadPoolExecutor, batch: list[tuple[str, str]],
                 present: dict) -> Callable[[], dict[str, bytes | None]]:
        """Start reading the sidecars of ``batch``'s shards in parallel (a task per shard);
        returns what waits for them, for :meth:`record`."""
        shards = [[f"{self.places[place]}/{shard}{SIDECAR_SUFFIX}"
                   for place in present.get(shard, ())] for shard, _ in batch]
        futures = [pool.submit(lambda group: [self._read(loc) for loc in group], group)
                   for group in shards]
        return lambda: {location: data for locations, future in zip(shards, futures)
                        for location, data in zip(locations, future.result())}

    def _read(self, location: str) -> bytes | None:
        try:
            return self.store.read_bytes(location)
        except FileNotFoundError:  # removed since the listing: as if not there
            return None

    def record(self, stage: str, shard: str, kind: str, present: set) -> Record | None:
        if (stage, kind) not in present:
            return None
        self.budget.spend()
        location = f"{self.places[stage, kind]}/{shard}{SIDECAR_SUFFIX}"
        data = self.fetched.pop(location) if location in self.fetched else \
            self._read(location)
        if data is None:
            return None
        record = parse_record(stage, shard, kind, data)
        if record is None:
            self.warn(unreadable_sidecar(location))
        return record

    def intact(self, record: Record) -> bool:
        """Whether the files ``record`` lists are what its writer wrote: trusted, as the keys
        trust the sidecars, unless verifying (then each is checked, and hashed if its version
        moved)."""
        if not self.check_files:
            return True
        base = folder(self.store, record.stage, record.kind)
        for entry in record.files:
            location = f"{base}/{entry['name']}"
            try:
                version = file_version(location)
            except (FileNotFoundError, OSError):
                return False
            if version != entry.get("version"):
                self.budget.spend()
                if sha256(location) != entry["sha256"]:
                    return False
        return True

    def shard(self, shard: str, expected: Mapping[str, StageSettings], raw: RawEntry | None,
              present: set) -> dict[str, Freshness]:
        published_ids: dict[str, str] = {}
        result: dict[str, Freshness] = {}
        for stage in STAGES:
            published = self.record(stage, shard, PUBLISHED, present)
            failed = self.record(stage, shard, FAILED, present)
            inputs, absent = {}, []
            for name in STAGE_INPUTS[stage]:
                if name == RAW_INPUT:
                    if raw is None:
                        absent.append(RAW_INPUT)
                    elif published is None and failed is None:
                        inputs = None  # nothing to compare: no need to hash the crawl file
                    else:
                        inputs[name] = self._raw_id(RawFile(raw.location, raw.version),
                                                    [published, failed])
                elif name in published_ids:
                    inputs[name] = published_ids[name]
                else:
                    absent.append(name)
            result[stage] = judge_stage(expected[stage], shard, published, failed, inputs,
                                        absent, self.intact, with_fingerprint=False)
            if published is not None and self.intact(published):
                published_ids[stage] = published.data_id
        return result

    def _raw_id(self, raw: RawFile, records: list[Record | None]) -> str:
        recorded = [r for r in records if r and (r.data.get("raw_file") or {}).get("version")
                    == raw.version]
        if not recorded:
            self.budget.spend()  # a crawl file changed since its raw shard was written: hashed
        return raw_content_id(raw, recorded)
